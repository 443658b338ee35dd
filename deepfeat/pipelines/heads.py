"""The classifier heads an experiment trains: tuned inside each training split, or fixed.

A *search factory* is a callable ``factory(y_train, seed) -> estimator`` returning an
unfitted scikit-learn estimator that chooses its own hyperparameters by cross-validation
on the training data it is fitted on (nested model selection: the held-out images never
take part). When some class has a single training image, cross-validation is impossible;
:func:`fixed_head` then trains one documented configuration with no tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "SearchFactory",
    "FIXED_HEAD_DESCRIPTION",
    "default_search_factory",
    "fixed_head",
    "min_class_count",
]

SearchFactory = Callable[[np.ndarray, int], BaseEstimator]

#: What :func:`fixed_head` trains, as stated in reports.
FIXED_HEAD_DESCRIPTION = (
    "standardized features + LogisticRegression(C=1.0), fixed hyperparameters (no tuning: "
    "with one training image per class cross-validation is impossible)"
)


def min_class_count(y: np.ndarray) -> int:
    """Return the size of the smallest class in ``y`` (0 when empty)."""
    _, counts = np.unique(y, return_counts=True)
    return int(counts.min()) if counts.size else 0


def fixed_head(seed: int = 0) -> BaseEstimator:
    """Return the untuned head used when cross-validation is impossible (see module doc).

    Examples
    --------
    >>> str(fixed_head().fit([[0.0], [1.0]], ["a", "b"]).predict([[0.9]])[0])
    'b'
    """
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    )


def _local_search(y_train: np.ndarray, seed: int) -> BaseEstimator:
    n_splits = max(2, min(5, min_class_count(y_train)))
    return GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)),
        {"logisticregression__C": [0.01, 0.1, 1.0]},
        cv=StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed),
        scoring="accuracy",
    )


def default_search_factory(y_train: np.ndarray, seed: int) -> Any:
    """Return deepfeat's tuned head for one training split (hyperparameters chosen by CV on it).

    Uses :func:`deepfeat.classify.search.build_search` with
    :func:`deepfeat.classify.cv.small_data_cv` folds drawn from ``y_train`` only.

    Parameters
    ----------
    y_train : numpy.ndarray
        Labels of the training split (at least two images per class).
    seed : int
        Seeds the folds and the estimator.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([0, 0, 0, 1, 1, 1])
    >>> X = np.array([[0.0], [0.1], [0.2], [1.0], [1.1], [1.2]])
    >>> int(default_search_factory(y, 0).fit(X, y).predict([[1.05]])[0])
    1
    """
    try:
        from deepfeat.classify.cv import small_data_cv
        from deepfeat.classify.search import build_search
    except ImportError:  # classify layer not shipped yet
        return _local_search(y_train, seed)
    return build_search(cv=small_data_cv(y_train, random_state=seed), random_state=seed, y=y_train)
