"""How long deepfeat's default head search takes as the number of embeddings grows.

The embeddings are cached rows (read back with :meth:`FeatureCache.read`), labelled by
the class of the photo each image was made from; every size is a stratified subsample.
The search is :func:`deepfeat.classify.search.build_search` with its defaults (all heads,
the default grid, folds from ``small_data_cv``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from deepfeat.featurize import FeatureCache

__all__ = ["measure_search", "load_cached"]


def load_cached(cache: Path, keys: list[str]) -> np.ndarray:
    """Rows of the cache's only feature space, aligned with ``keys``."""
    c = FeatureCache(cache)
    spaces = list(c.spaces())
    if len(spaces) != 1:
        raise ValueError(f"{cache}: expected one feature space, found {len(spaces)}")
    x, found = c.read(spaces[0], keys)
    if not found.all():
        raise ValueError(f"{cache}: {int((~found).sum())} of the requested rows are missing")
    return x


def _subsample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    if n >= len(y):
        return np.arange(len(y))
    idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    return np.sort(idx)


def measure_search(
    x: np.ndarray, y: np.ndarray, sizes: list[int], *, seed: int = 0
) -> dict[str, Any]:
    """Fit the default search on stratified subsamples of ``sizes`` rows; time each fit.

    Returns
    -------
    dict
        Per size: seconds, candidates, folds, best parameters and CV score; and the
        empirical scaling exponent between consecutive sizes (time ~ n^k).
    """
    from deepfeat.classify.search import build_search

    runs = []
    for n in sizes:
        idx = _subsample(y, n, seed)
        xs, ys = x[idx], y[idx]
        search = build_search(y=ys)
        t0 = time.perf_counter()
        search.fit(xs, ys)
        sec = time.perf_counter() - t0
        cvr = getattr(search, "cv_results_", {}) or {}
        runs.append(
            {
                "n": int(len(idx)),
                "dim": int(x.shape[1]),
                "classes": int(len(np.unique(ys))),
                "seconds": round(sec, 2),
                "candidates": len(cvr.get("params", [])),
                "folds": int(search.cv.get_n_splits())
                if hasattr(search.cv, "get_n_splits")
                else None,
                "best_params": getattr(search, "best_params_", None),
                "best_cv_score": round(float(getattr(search, "best_score_", float("nan"))), 4),
            }
        )
    for a, b in zip(runs, runs[1:]):
        b["scaling_exponent_vs_previous"] = round(
            math.log(b["seconds"] / a["seconds"]) / math.log(b["n"] / a["n"]), 2
        )
    return {"search": "deepfeat.classify.search.build_search defaults", "runs": runs}
