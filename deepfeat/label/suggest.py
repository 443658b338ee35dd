""":func:`suggest`: embed a pool once (through the cache) and rank what to label first or next."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepfeat.exceptions import InputError
from deepfeat.label.picks import Picks
from deepfeat.label.selectors import FirstSelector, NextSelector

__all__ = ["Suggestion", "suggest"]

log = logging.getLogger(__name__)


@dataclass
class Suggestion:
    """What :func:`suggest` chose.

    Attributes
    ----------
    table : pandas.DataFrame
        ``path, rank, action, reason`` (``action``: ``label`` for pool items to label,
        ``check`` for labelled items whose label looks wrong, listed after them).
    strategy : str
        ``"first"`` (no labels yet) or ``"next"`` (a model or labelled items).
    n_pool : int
        Pool items that could be read and ranked.
    failures : list of dict
        ``{"path", "reason"}`` of pool items that could not be read (left out).
    summary : dict
        Featurizing counts.
    """

    table: Any
    strategy: str
    n_pool: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _softmax(D: np.ndarray) -> np.ndarray:
    D = np.atleast_2d(D) if D.ndim == 2 else np.c_[-D, D]
    E = np.exp(D - D.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def _model_proba(model: Any, E: np.ndarray) -> np.ndarray:
    head = model.search_
    if hasattr(head, "predict_proba"):
        return head.predict_proba(E)
    return _softmax(np.asarray(head.decision_function(E), dtype=float))


def suggest(
    pool: Sequence[str],
    n: int,
    *,
    featurizer: Any = None,
    model: Any = None,
    labeled: tuple[Sequence[str], Sequence[Any]] | None = None,
    random_state: int | None = 0,
) -> Suggestion:
    """Rank ``n`` items of ``pool`` to label (and labelled items to check).

    Parameters
    ----------
    pool : sequence of str
        Paths of the unlabelled items.
    n : int
        Items to pick.
    featurizer : Featurizer, optional
        Embeds the pool (and ``labeled``); not used with ``model``, which embeds in its
        own space. Default: ``Featurizer()`` (a temporary cache).
    model : TransferClassifier, optional
        A fitted model: rank by its uncertainty (:class:`NextSelector`).
    labeled : (paths, labels), optional
        Items already labelled: a head on them gives the uncertainty, they cover their
        part of the pool, and the ones whose label looks wrong are listed to check.
    random_state : int or None, default=0

    Returns
    -------
    Suggestion
    """
    from deepfeat.featurize.featurizer import Featurizer

    pool = [os.fspath(p) for p in pool]
    lab_paths: list[str] = []
    lab_y = np.zeros(0)
    if labeled is not None:
        lab_paths = [os.fspath(p) for p in labeled[0]]
        lab_y = np.asarray(labeled[1])
        known = {os.path.abspath(p) for p in lab_paths}
        before = len(pool)
        pool = [p for p in pool if os.path.abspath(p) not in known]
        if before != len(pool):
            log.info("%d pool item(s) are already labelled: left out of the pool", before - len(pool))
    if not pool:
        raise InputError("the pool holds no unlabelled item to pick from")
    if model is not None:
        res = model._embed(pool)
        lab_res = None
    else:
        featurizer = featurizer if featurizer is not None else Featurizer()
        res_all = featurizer.featurize(lab_paths + pool)
        lab_res, res = _split(res_all, len(lab_paths))
    ok = np.asarray(res.ok, dtype=bool)
    failures = [{"path": f["path"], "reason": f["reason"]} for f in res.failures]
    if not ok.any():
        raise InputError(f"none of the {len(pool)} pool item(s) could be read (e.g. {failures[0]['path']}: "
                         f"{failures[0]['reason']})")
    paths = [p for p, k in zip(pool, ok) if k]
    X = res.features[ok]
    check: Picks | None = None
    if model is not None:
        sel = NextSelector(random_state=random_state).fit(X, proba=_model_proba(model, X), classes=model.classes_)
        strategy = "next"
    elif lab_paths:
        lok = np.asarray(lab_res.ok, dtype=bool)
        if not lok.any():
            raise InputError("none of the labelled items could be read")
        XL, yl = lab_res.features[lok], lab_y[lok]
        sel = NextSelector(random_state=random_state).fit(X, X_labeled=XL, y_labeled=yl)
        strategy = "next"
        check = sel.check(n)
        lab_ok_paths = [p for p, k in zip(lab_paths, lok) if k]
    else:
        sel = FirstSelector(random_state=random_state).fit(X)
        strategy = "first"
    picks = sel.select(min(n, len(paths)) if n > len(paths) and failures else n)
    import pandas as pd

    parts = [picks.to_frame(paths)]
    if check is not None and len(check):
        parts.append(check.to_frame(lab_ok_paths, start=len(picks) + 1))
    table = pd.concat(parts, ignore_index=True)[["path", "rank", "action", "reason"]]
    summary = {k: res.summary.get(k) for k in ("total", "featurized", "cached", "failed")}
    return Suggestion(table, strategy, int(ok.sum()), failures, summary)


def _split(res: Any, n_first: int) -> tuple[Any, Any]:
    """A featurize result of ``first + rest`` as two results (indices of failures re-based)."""
    from deepfeat.featurize.featurizer import FeaturizeResult

    def part(lo: int, hi: int) -> FeaturizeResult:
        fails = [{**f, "index": f["index"] - lo} for f in res.failures if lo <= f["index"] < hi]
        return FeaturizeResult(res.features[lo:hi], np.asarray(res.ok)[lo:hi], list(res.keys[lo:hi]),
                               fails, dict(res.summary))

    n = len(res.ok)
    return part(0, n_first), part(n_first, n)
