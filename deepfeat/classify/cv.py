"""Cross-validation splitters for small labelled sets.

With a handful of images per class, the usual 5-fold split is impossible or very noisy:
:func:`small_data_cv` uses as many stratified folds as the smallest class allows and
repeats them with new shuffles when the data are tiny, so a hyperparameter search still
averages over about ten validation folds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold

from deepfeat.exceptions import InputError, InvalidParameterError
from deepfeat.jsonable import plain

__all__ = [
    "MIN_TOTAL_SPLITS",
    "TINY_CLASS_SIZE",
    "class_counts",
    "check_cv_possible",
    "small_data_cv",
]

#: A class smaller than this makes the data "tiny": folds are repeated.
TINY_CLASS_SIZE = 10
#: With tiny data, folds are repeated until at least this many validation folds exist.
MIN_TOTAL_SPLITS = 10


def class_counts(y: Sequence[Any] | np.ndarray) -> dict[Any, int]:
    """Return ``{class: number of samples}`` in sorted class order.

    Examples
    --------
    >>> class_counts(["b", "a", "b"])
    {'a': 1, 'b': 2}
    """
    classes, counts = np.unique(np.asarray(y), return_counts=True)
    return {plain(c): int(n) for c, n in zip(classes, counts)}


def check_cv_possible(y: Sequence[Any] | np.ndarray) -> dict[Any, int]:
    """Raise :class:`~deepfeat.exceptions.InputError` unless stratified CV can run on ``y``.

    Stratified cross-validation needs at least two classes and at least two samples in
    every class (one to train on, one to validate on).

    Returns
    -------
    dict
        The class counts (see :func:`class_counts`).

    Raises
    ------
    InputError
        Fewer than 2 classes, or a class with a single sample; the message names them.

    Examples
    --------
    >>> check_cv_possible([0, 0, 1, 1])
    {0: 2, 1: 2}
    """
    counts = class_counts(y)
    if len(counts) < 2:
        got = f"{len(counts)} class" + ("" if len(counts) == 1 else "es")
        raise InputError(f"a classifier needs at least 2 classes, got {got}: {list(counts)}")
    single = [c for c, n in counts.items() if n < 2]
    if single:
        names = ", ".join(repr(c) for c in single[:10]) + (" ..." if len(single) > 10 else "")
        raise InputError(
            f"class(es) {names} have a single example: cross-validation needs at least 2 "
            f"per class (one to train on, one to validate on). Add images to these classes "
            f"or drop them."
        )
    return counts


def small_data_cv(
    y: Sequence[Any] | np.ndarray, n_splits: int = 5, random_state: int | None = 0
) -> StratifiedKFold | RepeatedStratifiedKFold:
    """Return a stratified CV splitter suited to the class sizes in ``y``.

    The number of folds is ``min(n_splits, smallest class size)``. When the smallest
    class has fewer than :data:`TINY_CLASS_SIZE` samples the folds are repeated with new
    shuffles until there are at least :data:`MIN_TOTAL_SPLITS` validation folds.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels.
    n_splits : int, default=5
        Folds wanted when every class is large enough (at least 2).
    random_state : int or None, default=0
        Seeds the shuffles.

    Returns
    -------
    StratifiedKFold or RepeatedStratifiedKFold

    Raises
    ------
    InvalidParameterError
        ``n_splits`` is not an integer >= 2.
    InputError
        Fewer than two classes, or a class with a single example.

    Examples
    --------
    >>> small_data_cv([0] * 50 + [1] * 50)
    StratifiedKFold(n_splits=5, random_state=0, shuffle=True)
    >>> cv = small_data_cv([0, 0, 0, 1, 1, 1])
    >>> type(cv).__name__, cv.get_n_splits()
    ('RepeatedStratifiedKFold', 12)
    """
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 2:
        raise InvalidParameterError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    smallest = min(check_cv_possible(y).values())
    k = int(min(n_splits, smallest))
    if smallest >= TINY_CLASS_SIZE:
        return StratifiedKFold(n_splits=k, shuffle=True, random_state=random_state)
    repeats = max(1, math.ceil(MIN_TOTAL_SPLITS / k))
    if repeats == 1:
        return StratifiedKFold(n_splits=k, shuffle=True, random_state=random_state)
    return RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=random_state)
