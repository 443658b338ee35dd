"""Cost of a small write into a large cache: time and bytes to add 5 rows to N rows.

For each size N a cache of N synthetic rows is built (one segment), then a fresh
:class:`~deepfeat.featurize.FeatureCache` adds 5 rows in one ``writer()`` session (open,
index, journal, commit), timed end to end. Bytes written are the process's ``write``
bytes (``wchar`` in ``/proc/self/io``) during that session, and the size of the files
the session created. For reference the time to copy the cache once is shown: that is
what every checkpoint of the version-1 layout did.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from deepfeat.featurize import FeatureCache

__all__ = ["measure_cache_write"]

SPACE = "bench"


def _wchar() -> int | None:
    try:
        with open("/proc/self/io", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _build(path: str, n: int, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cache = FeatureCache(path, fsync=False)
    step = 50_000
    with cache.writer():
        for s in range(0, n, step):
            m = min(step, n - s)
            keys = [f"{i:032x}" for i in range(s, s + m)]
            cache.append(SPACE, {"layer": "synthetic"}, keys, rng.normal(size=(m, dim)).astype(np.float16))


def _files(path: str) -> dict[str, tuple[int, int]]:
    """path -> (inode, size) of the cache file and its segments."""
    paths = [path]
    folder = path + ".d"
    if os.path.isdir(folder):
        paths += [os.path.join(folder, name) for name in os.listdir(folder)]
    return {p: (os.stat(p).st_ino, os.path.getsize(p)) for p in paths}


def measure_cache_write(sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000), dim: int = 256,
                        add: int = 5, folder: str | None = None, copy_reference: bool = True
                        ) -> dict[str, Any]:
    """Time and bytes written to add ``add`` rows to caches of each size.

    Parameters
    ----------
    sizes : tuple of int
        Rows in the cache before the write.
    dim : int
        Width of the synthetic float16 rows.
    add : int
        Rows added.
    folder : str or None
        Where the caches are built (a temporary folder by default; removed after).
    copy_reference : bool
        Also time one copy of the cache file (what a version-1 checkpoint cost).

    Returns
    -------
    dict
        ``rows`` (one entry per size) and ``load`` (``os.getloadavg()``).
    """
    rows = []
    with tempfile.TemporaryDirectory(dir=folder) as d:
        for n in sizes:
            path = os.path.join(d, f"c{n}.h5")
            t0 = time.perf_counter()
            _build(path, n, dim, seed=n)
            build_s = time.perf_counter() - t0
            before = _files(path)
            new = np.random.default_rng(0).normal(size=(add, dim)).astype(np.float16)
            keys = [f"{i:032x}" for i in range(10**9, 10**9 + add)]
            w0 = _wchar()
            t0 = time.perf_counter()
            cache = FeatureCache(path)
            with cache.writer():
                cache.append(SPACE, {"layer": "synthetic"}, keys, new)
            seconds = time.perf_counter() - t0
            w1 = _wchar()
            after = _files(path)
            # files with a new inode were written by the session (a hard link is not)
            old = {ino for ino, _ in before.values()}
            created = sum(size for ino, size in after.values() if ino not in old)
            got, found = FeatureCache(path).read(SPACE, keys)
            assert found.all() and np.array_equal(got, new.astype(np.float32))
            entry = {
                "cache_rows": n,
                "cache_bytes": sum(size for _, size in before.values()),
                "add_rows": add,
                "seconds": round(seconds, 4),
                "bytes_written": None if w0 is None or w1 is None else w1 - w0,
                "bytes_of_new_files": created,
                "segments_after": len(cache.segments()),
                "build_seconds": round(build_s, 2),
            }
            if copy_reference:
                t0 = time.perf_counter()
                shutil.copyfile(cache.segments()[0], path + ".copy")
                entry["v1_copy_seconds"] = round(time.perf_counter() - t0, 4)
                os.remove(path + ".copy")
            rows.append(entry)
            for p in after:
                os.remove(p)
    return {"rows": rows, "dim": dim, "dtype": "float16", "load": list(os.getloadavg())}


def format_cache_write(res: dict[str, Any]) -> str:
    """A table of :func:`measure_cache_write`'s figures."""
    lines = [
        f"add {res['rows'][0]['add_rows']} rows (x {res['dim']} {res['dtype']}) to a cache of N rows; "
        f"load {', '.join(f'{x:.2f}' for x in res['load'])}",
        f"{'N rows':>10} {'cache MB':>9} {'seconds':>8} {'bytes written':>14} {'new files B':>12} "
        f"{'v1 copy s':>10}",
    ]
    for r in res["rows"]:
        lines.append(
            f"{r['cache_rows']:>10,} {r['cache_bytes'] / 1e6:>9.1f} {r['seconds']:>8.3f} "
            f"{r['bytes_written'] if r['bytes_written'] is not None else '-':>14,} "
            f"{r['bytes_of_new_files']:>12,} {r.get('v1_copy_seconds', float('nan')):>10.3f}"
        )
    return "\n".join(lines)
