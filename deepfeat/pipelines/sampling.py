"""Fixed-seed sampling of labelled images: k-shot training draws and stratified splits.

Every draw is a pure function of ``(labels, k, seed)``: the same arguments give the same
indices on every machine. Within one seed the draws are *nested* -- the 2-shot draw
contains the 1-shot draw -- because each class is shuffled once per seed and the first
``k`` images are taken; a learning curve then measures the value of more labels rather
than the luck of a new sample at each point.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from deepfeat.exceptions import InputError, InvalidParameterError
from deepfeat.jsonable import plain

__all__ = [
    "ALL",
    "parse_shots",
    "class_permutation",
    "sample_k_shot",
    "check_test_size",
    "stratified_split",
]

#: The shot value meaning "every image of the training pool".
ALL = "all"


def parse_shots(shots: str | Iterable[int | str]) -> list[int | str]:
    """Parse a shots specification such as ``"1,2,5,all"`` into ``[1, 2, 5, "all"]``.

    Parameters
    ----------
    shots : str or iterable of int or str
        Positive integers and optionally ``"all"``, comma-separated when a string.

    Returns
    -------
    list of int or str
        Sorted, without duplicates, ``"all"`` last.

    Raises
    ------
    ValueError
        When an entry is neither a positive integer nor ``"all"``.

    Examples
    --------
    >>> parse_shots("5,1,all,2")
    [1, 2, 5, 'all']
    """
    items = shots.split(",") if isinstance(shots, str) else list(shots)
    ints: set[int] = set()
    has_all = False
    for item in items:
        text = str(item).strip().lower()
        if text == ALL:
            has_all = True
            continue
        try:
            k = int(text)
        except ValueError:
            k = 0
        if k < 1 or str(k) != text:
            raise InvalidParameterError(f"shots: each entry must be a positive integer or 'all', got {item!r}")
        ints.add(k)
    if not ints and not has_all:
        raise InvalidParameterError("shots: give at least one value, e.g. '1,2,5,all'")
    return [*sorted(ints), *([ALL] if has_all else [])]


def class_permutation(y: np.ndarray, pool: np.ndarray, cls: object, seed: int) -> np.ndarray:
    """Return the pool indices of class ``cls`` in the fixed order for ``seed``.

    The order depends only on the seed, the class and the class members, so the same
    seed always gives the same (nested) draws.
    """
    members = pool[y[pool] == cls]
    tag = int.from_bytes(hashlib.blake2b(str(cls).encode(), digest_size=8).digest(), "little")
    rng = np.random.default_rng([int(seed), tag, len(members)])
    return members[rng.permutation(len(members))]


def sample_k_shot(
    y: Sequence | np.ndarray,
    k: int | str,
    *,
    seed: int,
    pool: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Draw exactly ``k`` training images per class from ``pool`` (sorted indices into ``y``).

    Parameters
    ----------
    y : array-like of shape (n,)
        Class labels of all images.
    k : int or "all"
        Images per class; ``"all"`` takes the whole pool.
    seed : int
        Fixes the draw. Draws for one seed are nested: ``k=1`` is inside ``k=2``.
    pool : array-like of int, optional
        Indices the draw may use (the training pool); all images by default.

    Returns
    -------
    numpy.ndarray of int
        Sorted indices, ``k`` per class present in the pool.

    Raises
    ------
    InputError
        When a class has fewer than ``k`` images in the pool (the message names it).

    Examples
    --------
    >>> y = ["a", "a", "a", "b", "b"]
    >>> len(sample_k_shot(y, 2, seed=0))
    4
    >>> bool(set(sample_k_shot(y, 1, seed=3)) <= set(sample_k_shot(y, 2, seed=3)))
    True
    """
    y = np.asarray(y)
    pool = np.arange(len(y)) if pool is None else np.asarray(pool, dtype=int)
    if k == ALL:
        return np.sort(pool)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidParameterError(f"k must be a positive integer or 'all', got {k!r}")
    chosen = []
    for cls in np.unique(y[pool]):
        order = class_permutation(y, pool, cls, seed)
        if len(order) < k:
            raise InputError(
                f"class {plain(cls)!r} has only {len(order)} image(s) in the training pool, fewer "
                f"than k={k}; lower the largest shot value or add images to that class"
            )
        chosen.append(order[:k])
    return np.sort(np.concatenate(chosen))


def check_test_size(test_size: int | float) -> int | float:
    """Validate a test size: a positive int (images per class) or a float in (0, 1).

    Examples
    --------
    >>> check_test_size(40), check_test_size(0.25)
    (40, 0.25)
    """
    is_int = isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool)
    is_float = isinstance(test_size, (float, np.floating))
    if is_int and test_size < 1 or not (is_int or is_float and 0.0 < test_size < 1.0):
        raise InvalidParameterError(
            f"test_size must be a positive int (images per class) or a float in (0, 1), "
            f"got {test_size!r}"
        )
    return test_size


def stratified_split(
    y: Sequence | np.ndarray, test_size: int | float, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into a training pool and a test set, stratified per class.

    Parameters
    ----------
    y : array-like of shape (n,)
        Class labels.
    test_size : int or float
        An int is the number of test images per class; a float in (0, 1) is the fraction
        of each class (rounded, at least one image).
    seed : int
        Fixes the split.

    Returns
    -------
    train_idx, test_idx : numpy.ndarray of int
        Sorted, disjoint indices.

    Raises
    ------
    InputError
        When a class is too small to keep at least one training image.

    Examples
    --------
    >>> tr, te = stratified_split(["a"] * 4 + ["b"] * 4, 1, seed=0)
    >>> len(tr), len(te)
    (6, 2)
    """
    y = np.asarray(y)
    pool = np.arange(len(y))
    check_test_size(test_size)
    is_int = isinstance(test_size, (int, np.integer))
    train, test = [], []
    for cls in np.unique(y):
        # A seed offset keeps the split independent of the k-shot draws of the same seed.
        order = class_permutation(y, pool, cls, seed + 7919)
        n_test = int(test_size) if is_int else max(1, round(float(test_size) * len(order)))
        if n_test >= len(order):
            raise InputError(
                f"class {plain(cls)!r} has {len(order)} image(s): too few to hold out {n_test} for "
                f"testing and keep at least one for training"
            )
        test.append(order[:n_test])
        train.append(order[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
