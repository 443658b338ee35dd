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
from deepfeat.label.simulate import labels_saved, paired_difference, simulate_acquisition

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


def report(table: pd.DataFrame, name: str) -> list[str]:
    lines = [f"## {name}", "", "| comparison | k | draws | mean A | mean B | A - B (points) | 95 % interval |",
             "|---|---|---|---|---|---|---|"]
    comps = [
        ("first vs random", {"strategy": "first", "unlabeled": False}, {"strategy": "random", "unlabeled": False}),
        ("next vs random", {"strategy": "next", "unlabeled": False}, {"strategy": "random", "unlabeled": False}),
    ]
    if table["unlabeled"].any():
        for s in ("random", "first", "next"):
            comps.append((f"{s}: with vs without unlabelled", {"strategy": s, "unlabeled": True},
                          {"strategy": s, "unlabeled": False}))
    for title, a, b in comps:
        d = paired_difference(table, a, b)
        for r in d.itertuples(index=False):
            lines.append(f"| {title} | {r.shots} | {r.draws} | {100 * r.a:.1f} | {100 * r.b:.1f} | "
                         f"{100 * r.diff:+.1f} | {100 * r.ci_low:+.1f} to {100 * r.ci_high:+.1f} |")
    lines += ["", "| labels per class saved at equal accuracy (vs random) | k | saved | 95 % interval |",
              "|---|---|---|---|"]
    for s in ("first", "next"):
        for r in labels_saved(table, s).itertuples(index=False):
            saved = f"more than {max(table.shots) - r.shots:g}" if r.censored else (
                f"{r.saved:+.2f}" if r.saved > 0 else f"nothing saved ({r.saved:+.2f})")
            lines.append(f"| {s} | {r.shots:g} | {saved} | {r.ci_low:+.2f} to {r.ci_high:+.2f} |")
    semi = table[table["unlabeled"]]
    if len(semi):
        used = semi.groupby("shots")["semi_used"].apply(lambda s: int(s.notna().sum()))
        lines += ["", "semi-supervised candidate used (draws x strategies): "
                  + ", ".join(f"k={k}: {n} of {int((semi.shots == k).sum())}" for k, n in used.items())]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--datasets", default="oxford17,brain_mri4")
    ap.add_argument("--shots", default="1,2,5,10")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--no-unlabeled", action="store_true")
    ap.add_argument("--out", default=None, help="JSON lines, one per (dataset, strategy, k, draw)")
    ap.add_argument("--from-jsonl", default=None, help="only print the report of rows written by --out")
    args = ap.parse_args()
    if args.from_jsonl:
        rows = pd.read_json(args.from_jsonl, lines=True)
        for name, table in rows.groupby("dataset", sort=False):
            print("\n".join(report(table.drop(columns="dataset"), name)) + "\n")
        return 0
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores); python {platform.python_version()}")
    sink = open(args.out, "a") if args.out else None
    for name in args.datasets.split(","):
        cache = os.path.join(args.cache_dir, f"{name}.h5")
        Xp, yp = embeddings(name, "train", cache)
        Xt, yt = embeddings(name, "test", cache)
        print(f"{name}: pool {len(yp)} ({len(np.unique(yp))} classes), test {len(yt)}", flush=True)
        t0 = time.perf_counter()

        def on_row(row, name=name):
            if sink:
                sink.write(json.dumps({"dataset": name, **row}) + "\n")
                sink.flush()

        table = simulate_acquisition(Xp, yp, Xt, yt, shots=[int(k) for k in args.shots.split(",")],
                                     draws=args.draws, unlabeled=not args.no_unlabeled, on_row=on_row)
        print("\n".join(report(table, name)))
        print(f"({time.perf_counter() - t0:.0f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
