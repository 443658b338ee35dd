"""Choosing among cross-validated candidates, and an honest figure for the choice.

:func:`choose` picks one candidate from cross-validated scores. With ``"one_se"`` (the
default) it applies the one-standard-error rule (Hastie, Tibshirani & Friedman, *The
Elements of Statistical Learning*, 7.10): find the best mean score, then take the most
strongly regularised candidate of the same family (same space, preprocessing and head)
whose mean is within one standard error of it, its ``C`` divided by at most
:data:`MAX_SHRINK`. On a few hundred images dozens of
candidates are within noise of each other; the rule stops the choice from following
that noise towards the weakest regularisation. Given each candidate's inference *cost*
(forward passes per image of its space, :mod:`deepfeat.classify.cost`), the rule first
moves to the cheapest candidates within one standard error of the best: a space that
costs more is chosen only when its gain is beyond noise. Given each candidate's *rank*
(the place of its space in an ordered candidate list, most preferred first), it then keeps
the most preferred space among those: a later space is chosen only when it beats every
earlier one beyond noise (``fit`` orders the text spaces only:
:data:`~deepfeat.classify.spaces.ORDERED_MODALITIES`).

The winner's mean CV score is optimistic: it is the maximum of many noisy estimates.
:func:`bbc_estimate` gives a nearly unbiased figure at no extra fitting cost, by the
bootstrap bias-corrected CV of Tsamardinos, Greasidou & Borboudakis (*Machine Learning*
107, 2018): the out-of-fold predictions of every candidate are resampled; in each
bootstrap sample the same selection rule picks a candidate on the in-bag rows and is
scored on the out-of-bag rows, which took no part in that choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepfeat.exceptions import InvalidParameterError

__all__ = ["SELECTIONS", "N_BOOTSTRAP", "MAX_SHRINK", "choose", "bbc_estimate"]

#: Selection rules :func:`choose` knows.
SELECTIONS = ("one_se", "best")
#: Bootstrap samples of :func:`bbc_estimate`.
N_BOOTSTRAP = 200
#: The one-SE rule divides the winner's ``C`` by at most this much: on tiny data the
#: fold scores are so noisy that one standard error reaches far into underfitting
#: (measured on 10 images per class: held-out 0.89 without the cap, against 0.99).
MAX_SHRINK = 10.0


def _best_order(means: np.ndarray, stds: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """Candidates by highest mean, then lowest log-loss, then lowest spread."""
    return np.lexsort(
        (
            np.nan_to_num(stds, nan=np.inf),
            np.nan_to_num(losses, nan=np.inf),
            -np.round(np.nan_to_num(means, nan=-np.inf), 12),
        )
    )


def _strongest(candidates: np.ndarray, strength: np.ndarray) -> int:
    """The most regularised (smallest ``C``) of ``candidates``; the first among ties."""
    return int(candidates[np.argmin(strength[candidates])])


def _cheapest_near(
    best: int, within: np.ndarray, cost: np.ndarray | None, order: np.ndarray, rank: np.ndarray | None = None
) -> int:
    """The first candidate in ``order`` of the cheapest ones ``within`` noise of the best;
    of those, of the most preferred (lowest ``rank``)."""
    if cost is None and rank is None:
        return best
    keep = np.asarray(within, dtype=bool).copy()
    for key in (cost, rank):
        if key is not None:
            key = np.asarray(key, dtype=float)
            keep &= key <= key[keep].min()
    return int(next(i for i in order if keep[i]))


def choose(
    means: np.ndarray,
    stds: np.ndarray,
    losses: np.ndarray,
    n_splits: int,
    families: Sequence[str],
    strength: np.ndarray,
    selection: str = "one_se",
    cost: np.ndarray | None = None,
    rank: np.ndarray | None = None,
) -> int:
    """Index of the chosen candidate.

    Parameters
    ----------
    means, stds : ndarray of shape (n_candidates,)
        Mean and standard deviation of the validation scores over the folds.
    losses : ndarray of shape (n_candidates,)
        Mean validation log-loss (NaN where a head has none): breaks ties of ``means``.
    n_splits : int
        Number of validation folds (the standard error is ``std / sqrt(n_splits)``).
    families : sequence of str
        Candidates of one family differ only in their regularisation.
    strength : ndarray of shape (n_candidates,)
        ``C``: smaller is more strongly regularised.
    selection : {"one_se", "best"}
    cost : ndarray of shape (n_candidates,) or None
        Inference cost of each candidate (forward passes per image). With ``"one_se"``,
        the best of the cheapest candidates within one standard error of the best is
        taken first, then the family rule within the same standard error.
    rank : ndarray of shape (n_candidates,) or None
        Preference of each candidate's space (0: most preferred). With ``"one_se"``, among
        the cheapest candidates within one standard error of the best, those of the most
        preferred space are kept.

    Examples
    --------
    >>> means = np.array([0.80, 0.84, 0.85])
    >>> stds = np.array([0.02, 0.02, 0.02])
    >>> losses = np.full(3, np.nan)
    >>> choose(means, stds, losses, 4, ["a"] * 3, np.array([0.1, 1.0, 10.0]))
    1
    >>> choose(means, stds, losses, 4, ["a"] * 3, np.array([0.1, 1.0, 10.0]), "best")
    2
    >>> two = ["cheap", "cheap", "dear"]  # the dear space's gain is within one SE
    >>> choose(means, stds, losses, 4, two, np.array([1.0, 1.0, 1.0]), cost=np.array([1, 1, 9]))
    1
    >>> near = np.array([0.845, 0.84, 0.85])  # the preferred space "a" is within one SE
    >>> choose(near, stds, losses, 4, ["a", "b", "b"], np.ones(3), rank=np.array([0, 1, 1]))
    0
    """
    if selection not in SELECTIONS:
        raise InvalidParameterError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    best = int(_best_order(means, stds, losses)[0])
    if selection == "best" or n_splits < 2 or not np.isfinite(stds[best]):
        return best
    fam = np.asarray(families, dtype=object)
    strength = np.asarray(strength, dtype=float)
    threshold = means[best] - stds[best] / np.sqrt(n_splits) - 1e-12
    best = _cheapest_near(best, np.nan_to_num(means, nan=-np.inf) >= threshold, cost,
                          _best_order(means, stds, losses), rank)
    near = np.flatnonzero(
        (fam == fam[best])
        & (np.nan_to_num(means, nan=-np.inf) >= threshold)
        & (strength >= strength[best] / MAX_SHRINK * (1 - 1e-9))
    )
    return _strongest(near, strength)


def _weighted_scores(W: np.ndarray, H: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    """Score of every candidate under row weights ``W`` (n_boot, n): (n_boot, n_cand)."""
    if metric == "accuracy":
        return (W @ H.T) / np.maximum(W.sum(axis=1, keepdims=True), 1e-12)
    # balanced accuracy: mean over the classes present of the weighted recall
    total = np.zeros((W.shape[0], H.shape[0]))
    present = np.zeros((W.shape[0], 1))
    for k in np.unique(y):
        Wk = W * (y == k)
        mass = Wk.sum(axis=1, keepdims=True)
        has = mass > 0
        total += np.where(has, (Wk @ H.T) / np.maximum(mass, 1e-12), 0.0)
        present += has
    return total / np.maximum(present, 1)


def bbc_estimate(
    predictions: np.ndarray,
    y: np.ndarray,
    families: Sequence[str],
    strength: np.ndarray,
    *,
    selection: str = "one_se",
    metric: str = "accuracy",
    n_bootstrap: int = N_BOOTSTRAP,
    random_state: int | None = 0,
    cost: np.ndarray | None = None,
    rank: np.ndarray | None = None,
) -> dict[str, float]:
    """Bootstrap bias-corrected CV estimate of the score of the *selection procedure*.

    Parameters
    ----------
    predictions : ndarray of int, shape (n_candidates, n_samples)
        Out-of-fold predicted class index of every candidate for every row (rows never
        validated hold ``-2`` and are left out; ``-1`` marks a failed candidate).
    y : ndarray of int, shape (n_samples,)
        True class indices.
    families, strength, selection, cost, rank
        As for :func:`choose` (in a bootstrap sample the standard error of the best
        in-bag score is the binomial one).
    metric : {"accuracy", "balanced_accuracy"}
    n_bootstrap : int, default=200
    random_state : int or None, default=0

    Returns
    -------
    dict
        ``score`` (mean out-of-bag score of the candidates chosen in-bag), ``std`` (its
        spread over the bootstrap samples), ``n_bootstrap``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> noise = rng.integers(0, 2, (50, 200))  # 50 candidates that guess
    >>> est = bbc_estimate(noise, y, ["f"] * 50, np.arange(50.0))
    >>> bool((noise == y).mean(axis=1).max() > 0.55), abs(est["score"] - 0.5) < 0.05
    (True, True)
    """
    keep = (predictions >= -1).all(axis=0)
    P, yk = predictions[:, keep], np.asarray(y)[keep]
    n = P.shape[1]
    if n < 2 or P.shape[0] == 0:
        return {"score": float("nan"), "std": float("nan"), "n_bootstrap": 0}
    H = (P == yk[None, :]).astype(float)
    rng = np.random.default_rng(random_state)
    draws = rng.integers(0, n, size=(n_bootstrap, n))
    W = np.zeros((n_bootstrap, n))
    np.add.at(W, (np.arange(n_bootstrap)[:, None], draws), 1.0)
    inbag = _weighted_scores(W, H, yk, metric)
    oob = _weighted_scores((W == 0).astype(float), H, yk, metric)
    fam = np.asarray(families, dtype=object)
    strength = np.asarray(strength, dtype=float)
    out = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        s = inbag[b]
        best = int(np.argmax(s))
        pick = best
        if selection == "one_se":
            se = np.sqrt(max(s[best] * (1 - s[best]), 0.0) / n)
            within = s >= s[best] - se - 1e-12
            if cost is not None or rank is not None:
                best = _cheapest_near(best, within, cost, np.argsort(-s, kind="stable"), rank)
            near = np.flatnonzero(
                (fam == fam[best])
                & within
                & (strength >= strength[best] / MAX_SHRINK * (1 - 1e-9))
            )
            pick = _strongest(near, strength)
        out[b] = oob[b, pick]
    return {"score": float(out.mean()), "std": float(out.std()), "n_bootstrap": int(n_bootstrap)}
