"""Score every candidate of one preprocessing on one train/validation split, fast.

Work is shared between candidates instead of refitting from scratch:

* the preprocessing is fitted once per split and preprocessing choice;
* logistic regression walks its ``C`` grid from strong to weak regularisation, each fit
  warm-started from the previous coefficients (lbfgs), like a regularisation path;
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

import time
from collections.abc import Callable, Sequence
from typing import Any

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
        Fit + score time of each candidate (shared preprocessing time spread evenly).
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
        logreg = None
        gram: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for i, cand in enumerate(candidates):
            t0 = time.perf_counter()
            head = cand["head"]
            try:
                if head == "logreg":
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
            seconds[i] = time.perf_counter() - t0 + shared
    return scores, losses, seconds, errors, predictions
