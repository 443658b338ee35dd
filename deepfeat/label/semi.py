"""Learning from unlabelled items: pseudo-labels that enter only when the honest estimate says so.

A semi-supervised *candidate* turns the unlabelled pool into extra training rows for the
head the supervised search chose (same preprocessing, head and ``C``), so the final model
is the same kind of pipeline as without it: it saves, serves and exports unchanged.

* ``"label_spreading"`` (the default candidate): scikit-learn's
  :class:`~sklearn.semi_supervised.LabelSpreading` on a k-nearest-neighbour graph of the
  L2-normalised embeddings (labelled + pool); the more confident half of the pool items
  take the label spread to them.
* ``"self_training"`` (on request: slow, several head fits per fold):
  :class:`~sklearn.semi_supervised.SelfTrainingClassifier` around the chosen head: pool
  items predicted with probability >= 0.9 are added, a few rounds.

:func:`semi_supervised_choice` scores each candidate against the supervised head on the
same cross-validation folds of the labelled items (the pool never holds a validation
item), item by item: the gain is the mean paired difference in out-of-fold accuracy, its
95 % interval a paired bootstrap over the labelled items. A candidate is used only when
that interval lies above zero. Before that, pool items unlike every labelled item (nearest
labelled cosine below the 10th percentile of the labelled items' own nearest-neighbour
cosines) are left out, and a pool that is mostly such items is refused outright: it comes
from another data set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier

from deepfeat.exceptions import InvalidParameterError
from deepfeat.label.geometry import unit_rows
from deepfeat.process_state import ignoring_warnings

__all__ = ["DEFAULT_METHODS", "SEMI_METHODS", "fit_with_unlabeled", "pool_in_domain", "pseudo_labels", "semi_supervised_choice"]

log = logging.getLogger(__name__)

#: The semi-supervised candidates.
SEMI_METHODS = ("label_spreading", "self_training")
#: The candidates ``fit --unlabeled`` tries.
DEFAULT_METHODS = ("label_spreading",)
#: Label spreading keeps the pool items whose spread label is at least this quantile confident.
SPREAD_CONFIDENCE_QUANTILE = 0.5
#: Self-training adds pool items predicted with at least this probability.
SELF_TRAINING_THRESHOLD = 0.9
#: A pool with less than this share of items like the labelled ones is refused.
MIN_IN_DOMAIN = 0.5
_BOOTSTRAP = 2000


def pool_in_domain(X_labeled: np.ndarray, X_pool: np.ndarray) -> np.ndarray:
    """Mask of pool items as close to some labelled item as labelled items are to each other.

    The reference is the 10th percentile of each labelled item's cosine with its nearest
    other labelled item; a pool item passes when its nearest labelled cosine reaches it.

    Examples
    --------
    >>> L = np.array([[1.0, 0.1], [1.0, 0.2], [0.9, 0.1]])
    >>> pool_in_domain(L, np.array([[1.0, 0.15], [0.0, 1.0]])).tolist()
    [True, False]
    """
    UL, UP = unit_rows(np.asarray(X_labeled, np.float32)), unit_rows(np.asarray(X_pool, np.float32))
    if len(UL) < 2:
        return np.ones(len(UP), dtype=bool)
    S = UL @ UL.T
    np.fill_diagonal(S, -np.inf)
    ref = float(np.quantile(S.max(axis=1), 0.1))
    return (UP @ UL.T).max(axis=1) >= ref


def pseudo_labels(
    method: str,
    X_l: np.ndarray,
    y_l: np.ndarray,
    X_u: np.ndarray,
    head: Callable[[], BaseEstimator],
    *,
    random_state: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``X_u`` and the labels ``method`` gives them (see the module docstring)."""
    classes, codes = np.unique(y_l, return_inverse=True)
    y_all = np.r_[codes, np.full(len(X_u), -1)]
    if method == "label_spreading":
        U = unit_rows(np.vstack([X_l, X_u]).astype(np.float64))
        k = int(min(10, len(U) - 1))
        with ignoring_warnings(RuntimeWarning):  # isolated nodes: 0/0 in the normalisation
            ls = LabelSpreading(kernel="knn", n_neighbors=k, alpha=0.2, max_iter=100).fit(U, y_all)
        dist = ls.label_distributions_[len(X_l):]
        ok = np.isfinite(dist).all(axis=1) & (dist.sum(axis=1) > 0)
        conf = np.where(ok, dist.max(axis=1) / np.maximum(dist.sum(axis=1), 1e-12), -1.0)
        if ok.any():
            ok &= conf >= np.quantile(conf[ok], SPREAD_CONFIDENCE_QUANTILE)
        idx = np.flatnonzero(ok)
        return idx, classes[ls.transduction_[len(X_l):][idx]]
    if method == "self_training":
        st = SelfTrainingClassifier(head(), threshold=SELF_TRAINING_THRESHOLD, max_iter=5)
        with ignoring_warnings(UserWarning):  # "y contains no unlabeled samples" and the like
            st.fit(np.vstack([X_l, X_u]).astype(np.float64), y_all)
        got = st.labeled_iter_[len(X_l):] > 0
        idx = np.flatnonzero(got)
        return idx, classes[st.transduction_[len(X_l):][idx]]
    raise InvalidParameterError(f"method must be one of {SEMI_METHODS}, got {method!r}")


def _with_pool(method, head, X_l, y_l, X_u, random_state) -> BaseEstimator:
    idx, lab = pseudo_labels(method, X_l, y_l, X_u, head, random_state=random_state)
    return head().fit(np.vstack([X_l, X_u[idx]]), np.r_[y_l, lab])


def _paired_interval(diff: np.ndarray, random_state: int | None) -> tuple[float, float, float]:
    if len(diff) < 2 or np.all(diff == diff[0]):
        m = float(diff.mean()) if len(diff) else float("nan")
        return m, m, m
    from scipy.stats import bootstrap

    res = bootstrap((diff,), np.mean, confidence_level=0.95, n_resamples=_BOOTSTRAP,
                    method="percentile", random_state=random_state)
    return float(diff.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def semi_supervised_choice(
    X_l: np.ndarray,
    y_l: np.ndarray,
    X_u: np.ndarray,
    head: Callable[[], BaseEstimator],
    splitter: Any,
    *,
    methods: tuple[str, ...] = DEFAULT_METHODS,
    random_state: int | None = 0,
) -> dict[str, Any]:
    """Whether learning from ``X_u`` helps the head ``head()`` on ``X_l, y_l``, honestly.

    Parameters
    ----------
    X_l, y_l : ndarray
        Labelled embeddings and labels.
    X_u : ndarray
        Unlabelled embeddings (same space).
    head : callable
        Returns the unfitted chosen head (a fresh pipeline each call).
    splitter : CV splitter or None
        The folds of the labelled items; ``None`` (no cross-validation possible): no
        estimate, the pool is not used.
    methods : tuple of str
        Candidates to try.

    Returns
    -------
    dict
        ``used`` (the chosen method or None), ``reason``, ``n_pool``, ``n_in_domain``, and
        per method ``{gain, ci_low, ci_high}`` (out-of-fold accuracy, paired by item).
    """
    out: dict[str, Any] = {"used": None, "n_pool": int(len(X_u)), "methods": {}}
    keep = pool_in_domain(X_l, X_u)
    out["n_in_domain"] = int(keep.sum())
    if keep.mean() < MIN_IN_DOMAIN:
        out["reason"] = (f"refused: only {int(keep.sum())} of {len(X_u)} unlabelled items look like the "
                         f"labelled ones (another data set?)")
        return out
    if splitter is None:
        out["reason"] = "not used: no cross-validation possible (a class has a single example), so no estimate"
        return out
    X_u = X_u[keep]
    n = len(y_l)
    sums = {m: np.zeros(n) for m in ("base", *methods)}
    counts = np.zeros(n)
    for train, val in splitter.split(X_l, y_l):
        base = head().fit(X_l[train], y_l[train])
        sums["base"][val] += base.predict(X_l[val]) == y_l[val]
        for m in methods:
            model = _with_pool(m, head, X_l[train], y_l[train], X_u, random_state)
            sums[m][val] += model.predict(X_l[val]) == y_l[val]
        counts[val] += 1
    seen = counts > 0
    acc = {m: sums[m][seen] / counts[seen] for m in sums}
    out["oof_accuracy"] = float(acc["base"].mean())
    best, best_low = None, 0.0
    for m in methods:
        gain, lo, hi = _paired_interval(acc[m] - acc["base"], random_state)
        out["methods"][m] = {"gain": gain, "ci_low": lo, "ci_high": hi, "oof_accuracy": float(acc[m].mean())}
        if lo > 0 and (best is None or lo > best_low):
            best, best_low = m, lo
    out["used"] = best
    g = out["methods"]
    if best is None:
        top = max(g, key=lambda m: g[m]["gain"])
        out["reason"] = (f"not used: no candidate's gain is beyond noise (best {top}: "
                         f"{100 * g[top]['gain']:+.1f} points, 95 % interval "
                         f"{100 * g[top]['ci_low']:+.1f} to {100 * g[top]['ci_high']:+.1f})")
    else:
        out["reason"] = (f"used {best}: out-of-fold accuracy {100 * g[best]['gain']:+.1f} points "
                         f"(95 % interval {100 * g[best]['ci_low']:+.1f} to {100 * g[best]['ci_high']:+.1f})")
    return out


def fit_with_unlabeled(search: Any, X_l: np.ndarray, y_l: np.ndarray, X_u: np.ndarray,
                       *, methods: tuple[str, ...] = DEFAULT_METHODS,
                       random_state: int | None = 0) -> dict[str, Any]:
    """Decide on and apply the unlabelled pool to a fitted
    :class:`~deepfeat.classify.search.EmbeddingClassifier` (its head is refitted on the
    labelled items plus the chosen pseudo-labelled ones when they help).

    Returns the decision of :func:`semi_supervised_choice` (``used``, ``reason``...).
    """
    from deepfeat.classify.cv import small_data_cv

    params = dict(search.best_params_)

    def head() -> BaseEstimator:
        return _head_like(search, params)

    splitter = None if search.n_splits_ == 0 else small_data_cv(y_l, random_state=random_state)
    X_l = np.asarray(X_l, np.float64)
    X_u = np.asarray(X_u, np.float64)
    # self-training needs probabilities: not around an SVM head
    methods = tuple(m for m in methods if m != "self_training" or hasattr(head(), "predict_proba"))
    choice = semi_supervised_choice(X_l, np.asarray(y_l), X_u, head, splitter, methods=methods,
                                    random_state=random_state)
    if choice["used"]:
        keep = pool_in_domain(X_l, X_u)
        idx, lab = pseudo_labels(choice["used"], X_l, np.asarray(y_l), X_u[keep], head, random_state=random_state)
        choice["n_pseudo_labelled"] = int(len(idx))
        search.best_estimator_ = search._refit(np.vstack([X_l, X_u[keep][idx]]), np.r_[y_l, lab], params, None)
        search.calibration_ = None  # the refit on pseudo-labels has no honest folds to calibrate on
    return choice


def _head_like(search: Any, params: dict[str, Any]) -> BaseEstimator:
    """The chosen preprocessing and head, unfitted and uncalibrated."""
    from sklearn.pipeline import Pipeline

    from deepfeat.classify.candidates import make_head, make_preprocess

    return Pipeline([
        ("preprocess", make_preprocess(params["preprocess"], search.random_state)),
        ("head", make_head(params["head"], params, class_weight=search.class_weight,
                           max_iter=5 * search.max_iter, tol=search.tol, random_state=search.random_state)),
    ])


def learn_from_unlabeled(model: Any, X: Any, y: Any, pool: Any, *, random_state: int | None = 0) -> dict[str, Any]:
    """Offer a fitted :class:`~deepfeat.classify.TransferClassifier` the unlabelled ``pool``.

    The pool is embedded once, in the model's chosen space, through its cache (items also
    in ``X`` are left out), then :func:`fit_with_unlabeled` decides; the decision is kept
    as ``model.semi_supervised_`` and returned.

    Parameters
    ----------
    model : TransferClassifier
        Fitted on ``X, y``.
    X, y : sequence of images and labels
        Its training items (read back from the cache).
    pool : sequence of images
        The unlabelled items.
    """
    X = list(X)
    known = {str(p) for p in X if isinstance(p, (str, bytes)) or hasattr(p, "__fspath__")}
    pool = [p for p in pool if str(p) not in known]
    y = np.asarray(y)
    lab = model._embed(X)
    if not pool:
        choice = {"used": None, "n_pool": 0, "methods": {}, "reason": "not used: the pool holds no new item"}
    else:
        unl = model._embed(pool)
        choice = fit_with_unlabeled(model.search_, lab.features[lab.ok], y[lab.ok], unl.features[unl.ok],
                                    random_state=random_state)
        choice["n_unreadable"] = int((~np.asarray(unl.ok)).sum())
    model.semi_supervised_ = choice
    return choice
