"""Score every candidate of one preprocessing on one train/validation split, fast.

Work is shared between candidates instead of refitting from scratch:

* the preprocessing is fitted once per split and preprocessing choice;
* logistic regression walks its ``C`` grid from strong to weak regularisation, each fit
  warm-started from the previous coefficients (lbfgs): one call of scikit-learn's own path
  solver (:func:`_logreg_path`) for the whole grid, where ``LogisticRegression.fit`` would
  call it once per ``C``;
* with fewer training rows than features (the usual case: a few hundred images, 1280
  features), logistic regression runs on the rows' coordinates in their own span
  (``Z V`` from the thin SVD ``Z = U S V'``). An L2-penalised solution always lies in
  that span, so predictions and scores are those of the full problem, at a fraction of
  the cost;
* both SVMs train on precomputed Gram matrices: one matrix product per split serves
  every ``C`` and ``gamma``.

Accuracy and balanced accuracy, and the tie-breaking log-loss, are computed here with
numpy from the fitted coefficients: scikit-learn's scorers re-validate their inputs on
every call, which cost more than the fits themselves on a 45-value path.

BLAS is limited to one thread inside: on these small problems a multi-threaded BLAS
spends more time synchronising than computing (measured 50x slower for lbfgs on a
shared 2-core machine); parallelism comes from running splits in parallel (``n_jobs``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import sklearn
from scipy.special import log_expit, log_softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from deepfeat.classify.candidates import make_head, make_preprocess
from deepfeat.process_state import ignoring_warnings

__all__ = ["FAST_METRICS", "score_fold"]

#: Scoring names computed directly from predicted labels (no scorer call).
FAST_METRICS = ("accuracy", "balanced_accuracy")


def _metric(name: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    hit = y_true == y_pred
    if name == "accuracy":
        return float(hit.mean())
    # balanced accuracy: mean recall over the classes present in y_true (as sklearn)
    classes, codes = np.unique(y_true, return_inverse=True)
    recall = np.bincount(codes, weights=hit, minlength=len(classes)) / np.bincount(codes)
    return float(recall.mean())


class _Coefficients(NamedTuple):
    """What :func:`_logreg_outputs` reads of a fitted ``LogisticRegression``."""

    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray


def _logreg_outputs(est: Any, Z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Predicted labels and mean log-loss of a fitted LogisticRegression, with numpy."""
    d = Z @ est.coef_.T + est.intercept_
    classes = est.classes_
    if d.shape[1] == 1:
        d = d[:, 0]
        pred = classes[(d > 0).astype(int)]
        logp = np.column_stack([log_expit(-d), log_expit(d)])
    else:
        pred = classes[np.argmax(d, axis=1)]
        logp = log_softmax(d, axis=1)
    pos = np.searchsorted(classes, y)
    pos = np.minimum(pos, len(classes) - 1)
    if not np.all(classes[pos] == y):
        return pred, float("nan")  # a validation class absent from the training fold
    return pred, float(-np.mean(logp[np.arange(len(y)), pos]))


@functools.lru_cache(maxsize=1)
def _path_solver() -> Callable[..., Any] | None:
    """scikit-learn's regularisation-path solver, where it gives what ``LogisticRegression``
    gives (checked once per process on a small problem of each kind), else None."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.linear_model._logistic import _logistic_regression_path as path

        rng = np.random.default_rng(0)
        for n_classes in (2, 3):
            y = np.arange(12) % n_classes
            X = rng.normal(size=(12, 5)) + y[:, None]
            Cs = (0.01, 1.0, 100.0)
            got = _run_path(path, X, y, Cs, class_weight="balanced", max_iter=200, tol=1e-6)
            est = LogisticRegression(max_iter=200, tol=1e-6, class_weight="balanced", warm_start=True)
            for C, (coef, intercept) in zip(Cs, got):
                est.set_params(C=C).fit(X, y)
                if not (np.allclose(coef, est.coef_) and np.allclose(intercept, est.intercept_)):
                    return None
    except Exception:  # noqa: BLE001 - a private function: any change means "not this one"
        return None
    return path


def _run_path(
    path: Callable[..., Any], X: np.ndarray, y: np.ndarray, Cs: Sequence[float], *,
    class_weight: Any, max_iter: int, tol: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(coef_, intercept_)`` for each of ``Cs``, shaped as ``LogisticRegression``'s."""
    classes = np.unique(y)
    coefs, _, _ = path(
        X, y, classes=classes, Cs=list(Cs), fit_intercept=True, tol=tol, solver="lbfgs",
        max_iter=max_iter, class_weight=class_weight, check_input=False,
    )
    out = []
    for c in coefs:
        c = np.asarray(c)
        if c.ndim == 1:  # two classes: one row of coefficients, for classes[1]
            out.append((c[None, :-1], c[-1:]))
        else:
            out.append((c[:, :-1], c[:, -1]))
    return out


def _logreg_path(
    X: np.ndarray, y: np.ndarray, Cs: Sequence[float], *, class_weight: Any, max_iter: int,
    tol: float,
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The logistic-regression coefficients for every ``C`` of ``Cs`` (ascending), each
    solution warm-started from the previous one, in one call of scikit-learn's path solver
    (what ``LogisticRegressionCV`` uses): the same coefficients as a warm-started
    ``LogisticRegression`` refitted per ``C``, without its per-fit set-up, which cost more
    than the lbfgs iterations on these small problems (45 values of ``C`` on 15 images:
    72 ms refitted, 26 ms as one path, identical coefficients). None where that solver is
    not available as expected (the caller then refits per ``C``)."""
    path = _path_solver()
    if path is None:
        return None
    return _run_path(path, X, y, Cs, class_weight=class_weight, max_iter=max_iter, tol=tol)


def _sq_dists(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.maximum(d, 0.0)


def _row_space(Ztr: np.ndarray, Zte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of both sets in the span of the training rows (exact for L2 penalties)."""
    n, d = Ztr.shape
    if n >= d:
        return Ztr, Zte
    _, _, Vt = np.linalg.svd(Ztr, full_matrices=False)
    return Ztr @ Vt.T, Zte @ Vt.T


def score_fold(
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    preprocess: str,
    candidates: Sequence[dict[str, Any]],
    scorer: Callable[..., float],
    *,
    metric: str | None = None,
    class_weight: Any = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    random_state: int | None = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Validation scores of ``candidates`` (all using ``preprocess``) on one split.

    Parameters
    ----------
    X, y : ndarray
        All training data; ``train``/``test`` index into them.
    train, test : ndarray of int
    preprocess : str
        Preprocessing name (see :mod:`deepfeat.classify.candidates`).
    candidates : sequence of dict
        ``{"head", "C", "gamma"}``; logistic-regression candidates must come in
        ascending ``C`` order for the warm starts to follow the path.
    scorer : callable
        ``scorer(estimator, X_val, y_val) -> float``.
    metric : {"accuracy", "balanced_accuracy"} or None
        When given, computed directly (same values as the scorer, much faster).

    Returns
    -------
    scores : ndarray of shape (n_candidates,)
        NaN where scoring failed.
    losses : ndarray of shape (n_candidates,)
        Validation log-loss of the logistic-regression candidates (NaN for the others),
        used to break ties of ``scores``: with accuracy, dozens of ``C`` values often tie,
        and the strongest regularisation among them gives nearly uniform probabilities.
    seconds : ndarray of shape (n_candidates,)
        Fit + score time of each candidate (the shared preprocessing time spread evenly
        over all candidates, the logistic-regression path's over its candidates).
    errors : list of str
        One message per failed candidate.
    predictions : ndarray of int, shape (n_candidates, len(test))
        Each candidate's predicted class on the validation rows, as an index into
        ``np.unique(y)`` (-1 where the candidate failed): the out-of-fold predictions
        the honest estimate (:mod:`deepfeat.classify.select_rule`) resamples.
    """
    scores = np.full(len(candidates), np.nan)
    losses = np.full(len(candidates), np.nan)
    seconds = np.zeros(len(candidates))
    errors: list[str] = []
    classes = np.unique(y)
    predictions = np.full((len(candidates), len(test)), -1, dtype=np.int32)
    # Thousands of small fits per search: scikit-learn's per-call checks of parameters and
    # finiteness (the data were checked once, before the search) were 11 % of a default
    # fit's CPU on 16 images; config_context is thread-local and restored on exit.
    with threadpool_limits(limits=1, user_api="blas"), ignoring_warnings(ConvergenceWarning), \
            sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        t0 = time.perf_counter()
        pre = make_preprocess(preprocess, random_state).fit(X[train])
        Ztr, Zte = pre.transform(X[train]), pre.transform(X[test])
        Ztr, Zte = np.asarray(Ztr, dtype=np.float64), np.asarray(Zte, dtype=np.float64)
        if not (np.isfinite(Ztr).all() and np.isfinite(Zte).all()):  # what assume_finite skips
            errors = [f"{preprocess}: non-finite values after preprocessing"] * len(candidates)
            return scores, losses, seconds, errors, predictions
        ytr, yte = y[train], y[test]
        Ltr, Lte = (
            _row_space(Ztr, Zte) if any(c["head"] == "logreg" for c in candidates) else (Ztr, Zte)
        )
        shared = (time.perf_counter() - t0) / max(1, len(candidates))
        # the whole C grid in one path, where the metric needs no estimator object
        on_path: dict[int, _Coefficients] = {}
        path_share = 0.0
        at = [i for i, c in enumerate(candidates) if c["head"] == "logreg"]
        if metric and at:
            t0 = time.perf_counter()
            try:
                solved = _logreg_path(Ltr, ytr, [candidates[i]["C"] for i in at],
                                      class_weight=class_weight, max_iter=max_iter, tol=tol)
            except Exception:  # noqa: BLE001 - refitted one C at a time below, errors and all
                solved = None
            if solved is not None:
                train_classes = np.unique(ytr)
                on_path = {
                    i: _Coefficients(coef, intercept, train_classes)
                    for i, (coef, intercept) in zip(at, solved)
                }
                path_share = (time.perf_counter() - t0) / len(at)
        logreg = None
        gram: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for i, cand in enumerate(candidates):
            t0 = time.perf_counter()
            head = cand["head"]
            try:
                if head == "logreg":
                    est = on_path.get(i)  # only where a metric scores it: no scorer call
                    if est is None:
                        if logreg is None:
                            logreg = make_head(
                                "logreg",
                                cand,
                                class_weight=class_weight,
                                max_iter=max_iter,
                                tol=tol,
                                random_state=random_state,
                            )
                            logreg.set_params(warm_start=True)
                        est = logreg.set_params(C=cand["C"]).fit(Ltr, ytr)
                    pred, losses[i] = _logreg_outputs(est, Lte, yte)
                    scores[i] = _metric(metric, yte, pred) if metric else scorer(est, Lte, yte)
                    predictions[i] = np.searchsorted(classes, pred)
                else:
                    if not gram:
                        gram["linear"] = (Ztr @ Ztr.T, Zte @ Ztr.T)
                        gram["sq"] = (_sq_dists(Ztr, Ztr), _sq_dists(Zte, Ztr))
                    if head == "linsvm":
                        Ktr, Kte = gram["linear"]
                    else:
                        Dtr, Dte = gram["sq"]
                        Ktr, Kte = np.exp(-cand["gamma"] * Dtr), np.exp(-cand["gamma"] * Dte)
                    est = SVC(
                        kernel="precomputed",
                        C=cand["C"],
                        class_weight=class_weight,
                        break_ties=True,
                        random_state=random_state,
                    ).fit(Ktr, ytr)
                    pred = est.predict(Kte)
                    predictions[i] = np.searchsorted(classes, pred)
                    if metric:
                        scores[i] = _metric(metric, yte, pred)
                    else:
                        scores[i] = scorer(est, Kte, yte)
            except Exception as exc:  # noqa: BLE001 - like GridSearchCV(error_score=nan)
                errors.append(f"{head} {preprocess} C={cand['C']:.3g}: {type(exc).__name__}: {exc}")
                if head == "logreg":
                    logreg = None  # do not warm-start from a failed fit
            seconds[i] = time.perf_counter() - t0 + shared + (path_share if i in on_path else 0.0)
    return scores, losses, seconds, errors, predictions
