"""Reading cached rows in a request's order against h5py reading the whole dataset in order.

A cache of ``rows`` random float16 rows of width ``dim`` is written through
:class:`~deepfeat.featurize.FeatureCache` (journal, then checkpoint). Each round then
times, side by side: h5py reading the feature dataset sequentially (``ds[:]``, float16
as stored), :meth:`FeatureCache.read` of every key in a random order on a fresh cache
object (index load included; rows aligned with the request) returning the stored
float16 (``dtype=None``: the same bytes h5py returns, so the like-for-like figure) and
returning float32 (the default, which adds a widening pass and twice the output
memory), and the float16 read on an object whose index is already loaded.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from deepfeat.featurize import FeatureCache

__all__ = ["measure_cache_read", "SPACE"]

SPACE = "bench-read"


def _keys(n: int) -> list[str]:
    return [hashlib.blake2b(i.to_bytes(8, "little"), digest_size=16).hexdigest() for i in range(n)]


def _build(path: Path, keys: list[str], dim: int, seed: int) -> None:
    for suffix in ("", ".journal", ".lock"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    cache = FeatureCache(path, fsync=False)
    attrs = {"backbone": "benchmark", "layer": "penultimate", "pool": "avg"}
    step = 10_000
    with cache.writer():
        for s in range(0, len(keys), step):
            block = rng.standard_normal((min(step, len(keys) - s), dim), dtype=np.float32).astype(
                np.float16
            )
            cache.append(SPACE, attrs, keys[s : s + step], block)


def measure_cache_read(
    workdir: Path, *, rows: int = 100_000, dim: int = 1280, repeats: int = 3, seed: int = 0
) -> dict[str, Any]:
    """Time h5py's sequential read and FeatureCache.read in random order, alternating.

    Returns
    -------
    dict
        rows/s and MB/s (of stored float16) of each reader (medians), the per-round
        ratios ``cache_read_vs_h5py_sequential`` (fresh object, stored dtype),
        ``cache_read_float32_vs_h5py_sequential`` and
        ``cache_read_warm_vs_h5py_sequential``, and a correctness check of both dtypes.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"read-{rows}x{dim}.h5"
    keys = _keys(rows)
    t0 = time.perf_counter()
    ok = False
    if path.exists():
        with h5py.File(path, "r") as f:
            ds = f.get(f"spaces/{SPACE}/features")
            ok = ds is not None and ds.shape == (rows, dim) and ds.dtype == np.float16
    if not ok:
        _build(path, keys, dim, seed)
    build_s = time.perf_counter() - t0
    order = np.random.default_rng(seed + 1).permutation(rows)
    request = [keys[i] for i in order]
    mb = rows * dim * 2 / 1e6
    names = ["h5py_sequential", "cache_read", "cache_read_float32", "cache_read_warm"]
    times: dict[str, list[float]] = {name: [] for name in names}
    with h5py.File(path, "r") as f:
        key_rows = {k.decode(): i for i, k in enumerate(f[f"spaces/{SPACE}/keys"][...])}
    expect_rows = np.array([key_rows[k] for k in request])
    checked: dict[str, bool] = {}
    for r in range(repeats):
        steps = names[r % len(names) :] + names[: r % len(names)]
        warm = FeatureCache(path)
        warm.contains(SPACE, request[:1])  # loads the index outside the timed read
        for name in steps:
            if name == "h5py_sequential":
                t = time.perf_counter()
                with h5py.File(path, "r") as f:
                    seq = f[f"spaces/{SPACE}/features"][:]
                times[name].append(time.perf_counter() - t)
            else:
                c = warm if name == "cache_read_warm" else FeatureCache(path)
                dtype = np.float32 if name == "cache_read_float32" else None
                t = time.perf_counter()
                got, found = c.read(SPACE, request, dtype=dtype)
                times[name].append(time.perf_counter() - t)
                if name not in checked:
                    with h5py.File(path, "r") as f:
                        seq_ref = f[f"spaces/{SPACE}/features"][:]
                    want = seq_ref[expect_rows].astype(dtype or np.float16)
                    checked[name] = bool(found.all()) and got.dtype == want.dtype and np.array_equal(got, want)
                    del seq_ref, want
                del got
        del seq
    out: dict[str, Any] = {
        "rows": rows,
        "dim": dim,
        "dtype": "float16",
        "stored_mb": round(mb, 1),
        "build_seconds": round(build_s, 1),
        "repeats": repeats,
        "rows_correct_and_aligned": len(checked) == 3 and all(checked.values()),
    }
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {
            "seconds": round(med, 3),
            "rows_per_second": round(rows / med),
            "mb_per_second": round(mb / med, 1),
            "runs_seconds": [round(t, 3) for t in ts],
        }
    base = times["h5py_sequential"]
    out["cache_read_vs_h5py_sequential"] = round(
        statistics.median(b / c for b, c in zip(base, times["cache_read"])), 3
    )
    out["cache_read_float32_vs_h5py_sequential"] = round(
        statistics.median(b / c for b, c in zip(base, times["cache_read_float32"])), 3
    )
    out["cache_read_warm_vs_h5py_sequential"] = round(
        statistics.median(b / c for b, c in zip(base, times["cache_read_warm"])), 3
    )
    return out
