"""Which items to label: first picks, next picks and random picks, with and without the
unlabelled rest of the pool, on oxford17 and brain_mri4 from warm embedding caches.

Protocol: the train split is the pool (its labels hidden; revealed only for the picks), the
test split is held out. For each draw (seeds 0..draws-1) and budget of k labels per class
(k times the number of classes; the picks need not cover every class), each strategy picks,
deepfeat's default head search (:class:`~deepfeat.classify.search.EmbeddingClassifier`, or
the fixed head when a class has one pick) is fitted on the picks' cached embeddings
(the default backbone's penultimate embedding), and scored on the test split. "with
unlabelled" offers the rest of the pool to ``fit_with_unlabeled`` (used only when the
out-of-fold estimate says it helps). Differences are paired by draw with 95 % paired
bootstrap intervals.

Usage::

    python benchmarks/acquisition.py --cache-dir /tmp/me/cache [--datasets oxford17,brain_mri4]
        [--shots 1,2,5,10] [--draws 10] [--out results.jsonl]

``--cache-dir`` holds copies of ``/work/cache/<dataset>.h5`` (and ``.h5.d``): copy them
first, the shared ones are not to be locked by a benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from deepfeat.classify import load_xy
from deepfeat.featurize import Featurizer
from deepfeat.label.simulate import acquisition_report, simulate_acquisition

DATA = Path(os.environ.get("DEEPFEAT_DATA", "/work/data"))


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def embeddings(name: str, split: str, cache: str) -> tuple[np.ndarray, np.ndarray]:
    paths, y = load_xy(DATA / name / split)
    res = Featurizer(cache=cache, device="cpu", progress=False).featurize(paths)
    if res.summary.get("featurized"):
        print(f"note: {res.summary['featurized']} {name}/{split} images were not in the cache", file=sys.stderr)
    ok = np.asarray(res.ok)
    return res.features[ok], np.asarray(y)[ok]


def selection_speed(X: np.ndarray, n_rows: int = 10_000, n: int = 50, seed: int = 0) -> dict[str, float]:
    """Seconds to fit and select ``n`` of ``n_rows`` embeddings (real rows resampled with a
    little noise up to ``n_rows``): FirstSelector, and NextSelector with 100 labelled rows."""
    from deepfeat.label import FirstSelector, NextSelector

    rng = np.random.default_rng(seed)
    E = X[rng.integers(0, len(X), n_rows)]
    E = E + rng.normal(0, 0.05 * float(E.std()), E.shape).astype(E.dtype)
    t0 = time.perf_counter()
    FirstSelector().fit(E).select(n)
    first = time.perf_counter() - t0
    lab = rng.choice(n_rows, 100, replace=False)
    rest = np.setdiff1d(np.arange(n_rows), lab)
    t0 = time.perf_counter()
    NextSelector().fit(E[rest], X_labeled=E[lab], y_labeled=rng.integers(0, 10, 100)).select(n)
    return {"first": first, "next": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--datasets", default="oxford17,brain_mri4")
    ap.add_argument("--shots", default="1,2,5,10")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--no-unlabeled", action="store_true")
    ap.add_argument("--out", default=None, help="JSON lines, one per (dataset, strategy, k, draw)")
    ap.add_argument("--from-jsonl", default=None, help="only print the report of rows written by --out")
    ap.add_argument("--speed-only", action="store_true", help="only time the selection (50 of 10,000)")
    args = ap.parse_args()
    if args.from_jsonl:
        rows = pd.read_json(args.from_jsonl, lines=True)
        for name, table in rows.groupby("dataset", sort=False):
            print("\n".join(acquisition_report(table.drop(columns="dataset"), name)) + "\n")
        return 0
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores); python {platform.python_version()}")
    sink = open(args.out, "a") if args.out else None
    for name in args.datasets.split(","):
        cache = os.path.join(args.cache_dir, f"{name}.h5")
        Xp, yp = embeddings(name, "train", cache)
        if args.speed_only:
            sp = selection_speed(Xp)
            print(f"{name}: selection of 50 of 10,000 embeddings ({Xp.shape[1]}-d): first {sp['first']:.2f} s, "
                  f"next {sp['next']:.2f} s (fit + select)")
            continue
        Xt, yt = embeddings(name, "test", cache)
        print(f"{name}: pool {len(yp)} ({len(np.unique(yp))} classes), test {len(yt)}", flush=True)
        sp = selection_speed(Xp)
        print(f"selection speed: 50 of 10,000 embeddings ({Xp.shape[1]}-d): first {sp['first']:.2f} s, "
              f"next {sp['next']:.2f} s (fit + select)", flush=True)
        t0 = time.perf_counter()

        def on_row(row, name=name):
            if sink:
                sink.write(json.dumps({"dataset": name, **row}) + "\n")
                sink.flush()

        table = simulate_acquisition(Xp, yp, Xt, yt, shots=[int(k) for k in args.shots.split(",")],
                                     draws=args.draws, unlabeled=not args.no_unlabeled, on_row=on_row)
        print("\n".join(acquisition_report(table, name)))
        print(f"({time.perf_counter() - t0:.0f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
