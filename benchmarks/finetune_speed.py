"""Fine-tuning throughput of the default recipe, as wall time and as CPU time per image.

On a shared machine wall time depends on the other processes; CPU seconds per training
image (this process, all threads) do much less, and on an idle machine with C cores the
wall time is about CPU time / C when both threads are kept busy. Prints both, the load,
and the projection for N images and the default number of epochs.

Usage::

    python benchmarks/finetune_speed.py DATA [--images 32] [--epochs 2] [--project 250] [--precision auto] [--freeze 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from deepfeat.featurize import Featurizer
from deepfeat.featurize.inputs import load_labeled
from deepfeat.finetune import Recipe, fine_tune
from deepfeat.finetune.images import load_pixels
from deepfeat.finetune.network import build_network


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--project", type=int, default=250)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--freeze", type=int, default=Recipe().freeze)
    a = ap.parse_args()
    ds = load_labeled(a.data)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(ds.paths))[: a.images]
    labels = np.asarray(ds.labels)[idx]
    classes, codes = np.unique(labels, return_inverse=True)
    f = Featurizer(device="cpu", precision=a.precision)
    t0 = time.perf_counter()
    bank = load_pixels([ds.paths[i] for i in idx], f.preprocess)
    decode = time.perf_counter() - t0
    net, _ = build_network(f.resolved, None, "avg", len(classes))
    recipe = Recipe(epochs=a.epochs, val_fraction=0.0, freeze=a.freeze)
    load0 = os.getloadavg()
    c0, w0 = time.process_time(), time.perf_counter()
    res = fine_tune(net, bank, codes, recipe, f.runtime)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    n = a.images * a.epochs
    default = Recipe()
    n_proj = int(a.project * (1 - default.val_fraction)) * default.epochs
    cores = os.cpu_count() or 1
    print(f"{f.runtime.describe()}, freeze {a.freeze}: {n} training images in {wall:.1f} s wall ({n / wall:.2f} images/s), "
          f"{cpu:.1f} s CPU ({cpu / n:.3f} CPU s per image); decode+resize of {a.images} images {decode:.1f} s; "
          f"load before {load0}, after {os.getloadavg()}")
    print(f"projection for {a.project} images x {default.epochs} epochs ({n_proj} training images) on an idle "
          f"{cores}-core machine: ~{n_proj * cpu / n / cores / 60:.1f} min (CPU time / cores)")
    print("history:", [(h["epoch"], round(h["loss"], 3)) for h in res.history])


if __name__ == "__main__":
    main()
