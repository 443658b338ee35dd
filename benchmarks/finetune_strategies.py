"""Frozen features vs fine-tuning on a real data set, on the same draws per k.

The training pool and the test set are fixed-seed stratified subsamples (sizes below);
test images whose bytes also occur in the training pool are left out. Frozen: the
experiment's default tuned head ("fast" search) on cached efficientnet_lite0 features.
Fine-tuned: :func:`deepfeat.finetune.compare.finetune_draws` with the default recipe.
Times are per draw (head search, or LP + fine-tuning); the machine load is printed.

Usage::

    python benchmarks/finetune_strategies.py DATA [--test-src DIR | --test-per-class N]
        [--pool-per-class 60] [--shots 10] [--repeats 3] [--cache /work/cache/finetune.h5]
        [--epochs N] [--freeze BLOCKS] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time

import numpy as np
import pandas as pd

from deepfeat.featurize import Featurizer
from deepfeat.featurize.inputs import load_labeled
from deepfeat.finetune.compare import finetune_draws
from deepfeat.finetune.recipe import Recipe
from deepfeat.pipelines.heads import default_search_factory
from deepfeat.pipelines.protocol import make_draws, run_protocol
from deepfeat.pipelines.sampling import parse_shots, stratified_split
from deepfeat.pipelines.strategies import compare_strategies


def _cap(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:n] for c in np.unique(labels)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--test-src", default=None)
    ap.add_argument("--test-per-class", type=int, default=20)
    ap.add_argument("--pool-per-class", type=int, default=60)
    ap.add_argument("--shots", default="10")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=Recipe().epochs)
    ap.add_argument("--freeze", type=int, default=Recipe().freeze)
    ap.add_argument("--cache", default="/work/cache/finetune.h5")
    ap.add_argument("--csv", default=None)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    tr = load_labeled(a.data)
    paths, labels = list(tr.paths), np.asarray(tr.labels)
    if a.test_src:
        te = load_labeled(a.test_src)
        pool = _cap(labels, a.pool_per_class, 0)
        test_idx = _cap(np.asarray(te.labels), a.test_per_class, 1)
        paths = [paths[i] for i in pool] + [te.paths[i] for i in test_idx]
        labels = np.concatenate([labels[pool], np.asarray(te.labels)[test_idx]])
        pool, test = np.arange(len(pool)), np.arange(len(pool), len(paths))
    else:
        keep = _cap(labels, a.pool_per_class + a.test_per_class, 0)
        paths, labels = [paths[i] for i in keep], labels[keep]
        pool, test = stratified_split(labels, a.test_per_class, seed=0)
    f = Featurizer(cache=a.cache, device="cpu")
    res = f.featurize(paths)
    keys = np.asarray(res.keys, dtype=object)
    leaked = np.isin(keys[test], keys[pool])
    test = test[~leaked & res.ok[test]]
    pool = pool[res.ok[pool]]
    print(f"pool {len(pool)}, test {len(test)} ({int(leaked.sum())} leaked test images left out), "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", flush=True)
    draws, notes = make_draws(labels, parse_shots(a.shots), a.repeats, seed=0, train_pool=pool, test=test)
    t0 = time.perf_counter()
    frozen = run_protocol({"frozen": res.features}, labels, draws, search_factory=default_search_factory).table
    print(f"frozen done in {time.perf_counter() - t0:.1f} s, load {os.getloadavg()}", flush=True)
    rows, _ = finetune_draws(paths, labels, draws, res.features, f, Recipe(epochs=a.epochs, freeze=a.freeze))
    cmp = compare_strategies(frozen, rows, notes)
    pd.set_option("display.width", 200)
    print(cmp.summary.to_string(index=False))
    print(cmp.gain.to_string(index=False))
    print(cmp.verdict)
    print("fine-tune images/s per draw:", [round(r["images_per_second"], 2) for r in rows],
          "load", os.getloadavg(), flush=True)
    if a.csv:
        cmp.table.to_csv(a.csv, index=False)


if __name__ == "__main__":
    main()
