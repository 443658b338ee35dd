"""Choosing the feature space and the head together, on arrays, honestly and in bounded time.

:func:`select_space` takes the training rows of several candidate spaces (the same images
in each), ranks the spaces by :func:`~deepfeat.classify.select_logme.logme_score` and
keeps the best ``max_cv_spaces`` of them (the cheap prune), cross-validates the head
candidates of :class:`~deepfeat.classify.search.EmbeddingClassifier` on each survivor
with the *same folds*, and chooses among all of them at once with the rule of
:mod:`deepfeat.classify.select_rule` (one standard error within the winner's space,
preprocessing and head; given each space's inference cost, the cheapest spaces within one
standard error of the best come first). The honest estimate is the bootstrap bias-corrected CV over the
pooled out-of-fold predictions: it prices in the choice of the space as well as that of
the head. The chosen space's search is refitted on all rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone

from deepfeat.classify.search import EmbeddingClassifier, SearchScores
from deepfeat.classify.select_logme import logme_score
from deepfeat.exceptions import InvalidParameterError

__all__ = ["SpaceChoice", "select_space", "MAX_CV_SPACES"]

log = logging.getLogger(__name__)

#: Spaces cross-validated after the LogME prune.
MAX_CV_SPACES = 5


@dataclass
class SpaceChoice:
    """What :func:`select_space` tried and chose.

    Attributes
    ----------
    space : str
        The chosen space.
    search : EmbeddingClassifier
        Fitted on the chosen space (its ``honest_score_`` covers the whole selection).
    tried : list of dict
        One row per space: ``space``, ``dim``, ``logme``, ``status`` (``"cross-validated"``,
        ``"pruned by LogME"`` or ``"skipped: time budget"``), and for cross-validated spaces
        ``best_cv_score`` (their best candidate), ``n_candidates`` and ``seconds``.
    candidates : list of dict
        Every cross-validated candidate: ``space``, ``preprocess``, ``head``, ``C``,
        ``mean_cv_score``, ``std_cv_score``.
    optimistic_score, honest_score, honest_std : float
    seconds : float
    """

    space: str
    search: EmbeddingClassifier
    tried: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    optimistic_score: float = float("nan")
    honest_score: float = float("nan")
    honest_std: float = float("nan")
    seconds: float = 0.0


def select_space(
    spaces: Mapping[str, np.ndarray],
    y: np.ndarray,
    search: EmbeddingClassifier | None = None,
    *,
    max_cv_spaces: int = MAX_CV_SPACES,
    deadline: float | None = None,
    costs: Mapping[str, float] | None = None,
    ordered: bool = False,
) -> SpaceChoice:
    """Choose a space and a head for ``y`` among ``spaces`` (name -> training rows).

    Parameters
    ----------
    spaces : mapping of str to ndarray of shape (n_samples, dim)
        Candidate spaces, most preferred first (the first is always cross-validated: it
        is what is fitted when the time budget allows nothing else).
    y : ndarray of shape (n_samples,)
    search : EmbeddingClassifier or None
        The head search to run on each space (cloned); default ``EmbeddingClassifier()``.
    max_cv_spaces : int, default=5
        Spaces cross-validated; the others are pruned by their LogME score.
    deadline : float or None
        ``time.perf_counter()`` value after which no further space is cross-validated.
    costs : mapping of str to float or None
        Inference cost of each space (forward passes per image,
        :func:`~deepfeat.classify.cost.forward_passes`): with ``selection="one_se"`` a
        costlier space is chosen only when its CV gain is beyond one standard error
        (:func:`~deepfeat.classify.select_rule.choose`); the honest estimate prices the
        same rule in.
    ordered : bool, default=False
        The order of ``spaces`` is a preference: with ``selection="one_se"`` a later space
        is chosen only when its CV gain over every earlier space of no higher cost is beyond
        one standard error (see :data:`~deepfeat.classify.spaces.ORDERED_MODALITIES`).

    Returns
    -------
    SpaceChoice

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(n_class=3, return_X_y=True)
    >>> rng = np.random.default_rng(0)
    >>> choice = select_space({"noise": rng.normal(size=X.shape), "digits": X}, y)
    >>> choice.space, choice.honest_score > 0.9
    ('digits', True)
    """
    if not spaces:
        raise InvalidParameterError("spaces: give at least one candidate space")
    if isinstance(max_cv_spaces, bool) or not isinstance(max_cv_spaces, int) or max_cv_spaces < 1:
        raise InvalidParameterError(f"max_cv_spaces must be a positive integer, got {max_cv_spaces!r}")
    t_start = time.perf_counter()
    base = EmbeddingClassifier() if search is None else search
    names = list(spaces)
    tried = {n: {"space": n, "dim": int(np.asarray(spaces[n]).shape[1])} for n in names}
    if len(names) > max_cv_spaces:
        for n in names:
            tried[n]["logme"] = round(logme_score(spaces[n], y), 4)
        ranked = sorted(names[1:], key=lambda n: -tried[n]["logme"])
        keep = [names[0]] + ranked[: max_cv_spaces - 1]
    else:
        keep = names
    pooled: list[tuple[str, EmbeddingClassifier, np.ndarray, SearchScores]] = []
    for n in names:
        if n not in keep:
            tried[n]["status"] = "pruned by LogME"
            continue
        if pooled and deadline is not None and time.perf_counter() > deadline:
            tried[n]["status"] = "skipped: time budget"
            continue
        t0 = time.perf_counter()
        est = clone(base)
        X, yv, splitter = est._prepare(spaces[n], y)
        res = est._score_all(X, yv, splitter, label=n)
        means, _, _ = res.summary()
        tried[n].update(
            status="cross-validated",
            best_cv_score=round(float(np.nanmax(means)), 4),
            n_candidates=len(res.candidates),
            seconds=round(time.perf_counter() - t0, 2),
        )
        pooled.append((n, est, X, res))
    cands = [dict(c, space=n) for n, _, _, r in pooled for c in r.candidates]
    merged = SearchScores(
        cands,
        np.vstack([r.scores for *_, r in pooled]),
        np.vstack([r.losses for *_, r in pooled]),
        np.vstack([r.seconds for *_, r in pooled]),
        np.vstack([r.predictions for *_, r in pooled]),
        pooled[0][3].splitter,
    )
    families = [f"{c['space']}|{SearchScores.family(c)}" for c in cands]
    est0 = pooled[0][1]
    cost = None if costs is None else np.array([float(costs[c["space"]]) for c in cands])
    rank = np.array([names.index(c["space"]) for c in cands], dtype=float) if ordered else None
    best = est0._choose(merged, families, cost, rank)
    honest = est0._honest(merged.predictions, np.asarray(y), families, cands, best, cost, rank)
    # which space holds the winner, and its index there
    sizes = np.cumsum([len(r.candidates) for *_, r in pooled])
    w = int(np.searchsorted(sizes, best, side="right"))
    n, est, X, res = pooled[w]
    local = best - (int(sizes[w - 1]) if w else 0)
    est._finish(X, np.asarray(y), res, local, honest, time.perf_counter() - t_start)
    means, stds, _ = merged.summary()
    rows = [
        {
            "space": c["space"],
            "preprocess": c["preprocess"],
            "head": c["head"],
            "C": float(c["C"]),
            **({"gamma_factor": c["gamma_factor"]} if "gamma_factor" in c else {}),
            "mean_cv_score": round(float(m), 4),
            "std_cv_score": round(float(s), 4),
        }
        for c, m, s in zip(cands, means, stds)
    ]
    log.info(
        "chose space %s of %d (%d cross-validated): CV %.4f (optimistic), honest %.4f",
        n,
        len(names),
        len(pooled),
        est.best_score_,
        est.honest_score_,
    )
    return SpaceChoice(
        space=n,
        search=est,
        tried=[tried[m] for m in names],
        candidates=rows,
        optimistic_score=est.best_score_,
        honest_score=est.honest_score_,
        honest_std=est.honest_std_,
        seconds=time.perf_counter() - t_start,
    )
