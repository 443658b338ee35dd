"""Benchmark of the classify layer on brain_mri4 (4 classes of brain MRI, train/ and test/).

Measures, on a stratified subsample drawn with a fixed seed:

1. the offline default backbone (efficientnet_lite0) with the default head search
   (:class:`deepfeat.classify.TransferClassifier` defaults) -> held-out test accuracy;
2. a raw-pixel baseline measured the same way: 32x32 grayscale pixels (1024 numbers per
   image) with the same default search (:class:`deepfeat.classify.EmbeddingClassifier`);
3. the wall time of ``fit`` on 250 training images with the feature cache already warm
   (i.e. the cost of the default search itself plus cache reads).

Test images whose exact bytes also occur in train/ (the full train folder, not just the
subsample) are left out of the test sample, and counted: this data set is a copy of a
public Kaggle set known to hold duplicates. Near-duplicates (re-encoded or resized) are
not detected here.

Usage::

    python benchmarks/classify_brain_mri.py [--data DIR] [--train-per-class 100]
        [--test-per-class 100] [--cache FILE.h5] [--json-out results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from deepfeat.classify import EmbeddingClassifier, ImageEmbedder, TransferClassifier, load_xy
from deepfeat.featurize.hashing import hash_bytes

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "brain_mri4"

log = logging.getLogger("benchmark")


def stratified_sample(
    y: np.ndarray, per_class: int | None, seed: int, exclude: np.ndarray | None = None
) -> np.ndarray:
    """Indices of ``per_class`` items of each class (all when None), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    keep = np.ones(len(y), bool) if exclude is None else ~exclude
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero((y == c) & keep)
        out.append(
            idx if per_class is None else rng.choice(idx, min(per_class, len(idx)), replace=False)
        )
    return np.sort(np.concatenate(out))


def pixels(paths: list[str], size: int = 32) -> np.ndarray:
    """Grayscale ``size`` x ``size`` pixels in [0, 1], one row per image."""
    rows = [
        np.asarray(Image.open(p).convert("L").resize((size, size), Image.BILINEAR), np.float32)
        / 255
        for p in paths
    ]
    return np.stack(rows).reshape(len(paths), -1)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--train-per-class", type=int, default=100)
    ap.add_argument("--test-per-class", type=int, default=100, help="0 = the whole test folder")
    ap.add_argument("--cache", default=".cache/benchmarks/brain_mri4.h5")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if not args.data.is_dir():
        sys.exit(f"no data at {args.data}")
    os.makedirs(os.path.dirname(os.path.abspath(args.cache)), exist_ok=True)

    Xtr_all, ytr_all = load_xy(args.data / "train")
    Xte_all, yte_all = load_xy(args.data / "test")
    train_hashes = {hash_bytes(Path(p).read_bytes()) for p in Xtr_all}
    dup = np.array([hash_bytes(Path(p).read_bytes()) in train_hashes for p in Xte_all])
    log.info(
        "%d of %d test images are byte-identical to a train image; left out", dup.sum(), len(dup)
    )

    tr = stratified_sample(ytr_all, args.train_per_class, args.seed)
    te = stratified_sample(yte_all, args.test_per_class or None, args.seed, exclude=dup)
    Xtr, ytr = [Xtr_all[i] for i in tr], ytr_all[tr]
    Xte, yte = [Xte_all[i] for i in te], yte_all[te]
    log.info("train %s, test %s", dict(Counter(ytr)), dict(Counter(yte)))

    result: dict = {
        "data": str(args.data),
        "seed": args.seed,
        "train_per_class": args.train_per_class,
        "test_per_class": args.test_per_class or "all",
        "n_train": len(Xtr),
        "n_test": len(Xte),
        "test_duplicates_of_train_left_out": int(dup.sum()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }

    # 1. default backbone + default search
    t0 = time.perf_counter()
    clf = TransferClassifier(ImageEmbedder(cache=args.cache, device=args.device), verbose=1).fit(Xtr, ytr)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    acc = clf.score(Xte, yte)
    result["cnn"] = {
        "pipeline": clf.describe(),
        "cv_score": clf.best_score_,
        "cv_std": clf.best_std_,
        "test_accuracy": acc,
        "fit_seconds": round(fit_s, 1),
        "search_seconds": round(clf.search_.search_time_, 1),
        "featurize_train": clf.featurize_summary_,
        "predict_test_seconds": round(time.perf_counter() - t0, 1),
    }

    # 2. raw pixels, same search
    t0 = time.perf_counter()
    Ptr, Pte = pixels(Xtr), pixels(Xte)
    pix = EmbeddingClassifier(verbose=1).fit(Ptr, ytr)
    p = pix.best_params_
    result["pixels_32x32_gray"] = {
        "pipeline": f"{p['preprocess']} -> {p['head']}(C={p['C']:.3g}"
        + (f", gamma={p['gamma']:.3g})" if "gamma" in p else ")"),
        "cv_score": pix.best_score_,
        "cv_std": pix.best_std_,
        "test_accuracy": pix.score(Pte, yte),
        "fit_seconds": round(time.perf_counter() - t0, 1),
    }

    # 3. fit on 250 images with a warm cache
    sub = stratified_sample(ytr, 250 // len(np.unique(ytr)), args.seed + 1)
    extra = np.setdiff1d(np.arange(len(ytr)), sub)[: 250 - len(sub)]
    sub = np.sort(np.concatenate([sub, extra]))
    X250, y250 = [Xtr[i] for i in sub], ytr[sub]
    t0 = time.perf_counter()
    warm = TransferClassifier(ImageEmbedder(cache=args.cache, device=args.device)).fit(X250, y250)
    result["fit_250_warm_cache"] = {
        "n_images": len(X250),
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "search_seconds": round(warm.search_.search_time_, 2),
        "featurized": warm.featurize_summary_["featurized"],
        "from_cache": warm.featurize_summary_["cached"],
        "n_candidates": len(warm.cv_results_["params"]),
        "n_splits": warm.n_splits_,
        "pipeline": warm.describe(),
    }
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text)
    return result


if __name__ == "__main__":
    main()
