"""Labelled items whose label looks wrong: out-of-fold disagreement and conflicting duplicates."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from threadpoolctl import threadpool_limits

from deepfeat.classify.cv import class_counts
from deepfeat.label.picks import Picks
from deepfeat.pipelines.audit import near_duplicate_pairs
from deepfeat.process_state import ignoring_warnings

__all__ = ["suspect_labels"]


def suspect_labels(
    U: np.ndarray,
    y: np.ndarray,
    head: Any,
    *,
    threshold: float,
    n: int | None = None,
    random_state: int | None = 0,
) -> Picks:
    """Rank labelled items whose label looks wrong, most doubtful first.

    Parameters
    ----------
    U : ndarray of shape (n_labeled, n_features)
        Embeddings of the labelled items (L2-normalised).
    y : ndarray of shape (n_labeled,)
        Their labels.
    head : classifier
        Unfitted head with ``predict_proba``: fitted out of fold (stratified, up to 5
        folds) when every class has at least two items.
    threshold : float
        Cosine at or above which two items are near duplicates (the audit's measure).
    n : int or None
        At most so many.

    Returns
    -------
    Picks
        ``kind="check"``; ``scores`` is the out-of-fold probability of the given label
        (NaN where no out-of-fold prediction was possible).

    Examples
    --------
    >>> from deepfeat.pipelines.heads import fixed_head
    >>> rng = np.random.default_rng(0)
    >>> U = np.r_[rng.normal(0, 0.1, (10, 3)) + [1, 0, 0], rng.normal(0, 0.1, (10, 3)) + [0, 1, 0]]
    >>> y = np.array(["a"] * 10 + ["b"] * 10); y[3] = "b"  # one wrong label
    >>> suspect_labels(U, y, fixed_head(), threshold=0.99).indices.tolist()[:1]
    [3]
    """
    y = np.asarray(y)
    counts = class_counts(y)
    doubt: dict[int, list[str]] = {}
    score = np.full(len(y), np.nan)
    if len(counts) >= 2 and min(counts.values()) >= 2:
        folds = StratifiedKFold(min(5, min(counts.values())), shuffle=True, random_state=random_state)
        with ignoring_warnings(UserWarning), threadpool_limits(limits=1, user_api="blas"):
            P = cross_val_predict(head, U.astype(np.float64), y, cv=folds, method="predict_proba")
        classes = np.unique(y)
        given = np.searchsorted(classes, y)
        score = P[np.arange(len(y)), given]
        top = np.argmax(P, axis=1)
        for i in np.flatnonzero(top != given):
            doubt.setdefault(int(i), []).append(
                f"out of fold the model says {classes[top[i]]!s} ({P[i, top[i]]:.2f}), "
                f"gives {y[i]!s} {score[i]:.2f}"
            )
    ii, jj, sims = near_duplicate_pairs(U, threshold - 1e-6)
    for i, j, s in zip(ii, jj, sims):
        if y[i] != y[j]:
            doubt.setdefault(int(i), []).append(f"near duplicate (cosine {s:.3f}) of item {int(j)} labelled {y[j]!s}")
            doubt.setdefault(int(j), []).append(f"near duplicate (cosine {s:.3f}) of item {int(i)} labelled {y[i]!s}")
    order = sorted(doubt, key=lambda i: (np.nan_to_num(score[i], nan=-1.0), i))
    if n is not None:
        order = order[:n]
    reasons = [f"check label {y[i]!s}: " + "; ".join(doubt[i]) for i in order]
    return Picks(np.array(order, dtype=int), reasons, score[order] if order else np.zeros(0), kind="check")
