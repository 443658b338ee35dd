"""Held-out accuracy and fit time: the new default selection vs the previous default vs a
plain baseline, on oxford17 and brain_mri4 (``../shared/datasets``), from a warm cache.

Methods (all on the same cached embeddings; the time is that of fitting on arrays, i.e.
a warm-cache ``fit`` less the cache reads):

* ``plain``: StandardScaler + L2 logistic regression, ``C`` by 5-fold stratified CV over
  7 values ``logspace(-3, 3, 7)`` (scikit-learn ``GridSearchCV``);
* ``old_default``: the previous default search (3 heads x 2 preprocessings x the full
  grids, best mean CV score) on the penultimate space;
* ``new_one_space``: the new default head search (compact grid, one-SE rule) on the
  penultimate space;
* ``new_default``: the new default of ``deepfeat fit``: space and head chosen together
  by :func:`deepfeat.classify.select_space.select_space` over the default candidate
  spaces (:func:`deepfeat.classify.spaces.default_space_specs`), before inference cost
  took part in the choice;
* ``cost_default``: what ``deepfeat fit`` does now: the same, with each space's forward
  passes per image given to the one-SE rule (a costlier space only beyond one SE).

Usage::

    python benchmarks/select_compare.py --cache /work/cache/select.h5 [--json-out FILE]

Splits: oxford17 40 (``--train-per-class``) train / 40 test per class, seeds 0, 1, 2
(``numpy`` permutation per class); brain_mri4 the sample of ``benchmarks/classify_brain_mri.py`` (100 per class from
train/, 100 per class from test/ with byte-duplicates of train images left out).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from deepfeat.classify import load_xy
from deepfeat.classify.candidates import HEADS
from deepfeat.classify.cost import forward_passes
from deepfeat.classify.search import EmbeddingClassifier
from deepfeat.classify.select_space import select_space
from deepfeat.classify.spaces import (
    PART_NORM,
    default_space_specs,
    join_parts,
    space_name,
    space_parts,
)
from deepfeat.featurize import Featurizer

_HERE = Path(__file__).resolve()
#: ``../shared/datasets`` next to the checkout (a worktree under ``wt/`` looks one level up)
DATA = next(
    (p / "shared" / "datasets" for p in _HERE.parents[2:4] if (p / "shared" / "datasets").is_dir()),
    _HERE.parents[1].parent / "shared" / "datasets",
)
log = logging.getLogger("benchmark")


def split_per_class(y: np.ndarray, n_train: int, n_test: int, seed: int):
    rng = np.random.default_rng(seed)
    tr, te = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        tr += idx[:n_train].tolist()
        te += idx[n_train : n_train + n_test].tolist()
    return np.sort(tr), np.sort(te)


def space_features(paths, specs, cache, part_norm=PART_NORM):
    """name -> features of ``paths`` for every spec (a concatenation's parts joined as
    ``deepfeat fit`` joins them, :func:`~deepfeat.classify.spaces.join_parts`)."""
    blocks = {}
    for spec in specs:
        parts = spec if isinstance(spec, list) else [spec]
        cols = []
        for p in parts:
            f = Featurizer(p.get("backbone", "efficientnet_lite0"), layer=p.get("layer"),
                           tta=p.get("tta", "none"), cache=cache)
            cols.append(f.featurize(list(paths)).features)
        blocks[space_name(spec)] = join_parts(cols, part_norm)
    return blocks


def brain_sample(data: Path) -> tuple[list[str], np.ndarray, int]:
    """brain_mri4: 100 per class from train/, then 100 per class from test/ that are no
    byte-copy of a train image; returns (paths, labels, number of training rows first)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from classify_brain_mri import stratified_sample

    from deepfeat.featurize.hashing import hash_bytes

    d = data / "brain_mri4"
    Xtr, ytr = load_xy(d / "train")
    Xte, yte = load_xy(d / "test")
    seen = {hash_bytes(Path(p).read_bytes()) for p in Xtr}
    dup = np.array([hash_bytes(Path(p).read_bytes()) in seen for p in Xte])
    a = stratified_sample(ytr, 100, 0)
    b = stratified_sample(yte, 100, 0, exclude=dup)
    return [Xtr[i] for i in a] + [Xte[i] for i in b], np.concatenate([ytr[a], yte[b]]), len(a)


def plain_baseline():
    """StandardScaler + L2 logistic regression, C by 5-fold CV over 7 values (run with BLAS
    limited to one thread, as deepfeat's search runs: on a shared 2-core machine threaded
    BLAS made this baseline ~10x slower)."""
    return GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        {"logisticregression__C": np.logspace(-3, 3, 7)},
        cv=StratifiedKFold(5, shuffle=True, random_state=0),
    )


def evaluate(blocks, ytr, yte, tr, te, costs=None):
    pen = next(iter(blocks))
    out = {}
    methods = {
        "plain": lambda: plain_baseline().fit(blocks[pen][tr], ytr),
        "old_default": lambda: EmbeddingClassifier(
            HEADS, preprocessing=("standardize", "l2"), grid="full", selection="best"
        ).fit(blocks[pen][tr], ytr),
        "new_one_space": lambda: EmbeddingClassifier().fit(blocks[pen][tr], ytr),
        "new_default": lambda: select_space({k: v[tr] for k, v in blocks.items()}, ytr),
        "cost_default": lambda: select_space({k: v[tr] for k, v in blocks.items()}, ytr, costs=costs),
    }
    for name, make in methods.items():
        t0 = time.perf_counter()
        with threadpool_limits(limits=1, user_api="blas"):
            model = make()
        secs = time.perf_counter() - t0
        if name in ("new_default", "cost_default"):
            acc = float((model.search.predict(blocks[model.space][te]) == yte).mean())
            row = {
                "space": model.space,
                "forward_passes": (costs or {}).get(model.space),
                "cv_optimistic": model.optimistic_score,
                "honest": model.honest_score,
                "params": model.search.best_params_,
            }
        else:
            acc = float((model.predict(blocks[pen][te]) == yte).mean())
            row = {"params": getattr(model, "best_params_", None)}
            if hasattr(model, "honest_score_"):
                row.update(cv_optimistic=model.best_score_, honest=model.honest_score_)
        row.update(test_accuracy=acc, fit_seconds=round(secs, 2))
        out[name] = row
        log.info("%s: %.4f in %.1f s %s", name, acc, secs, row.get("space", ""))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--only", choices=("oxford17", "brain_mri4"), default=None)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--train-per-class", type=int, default=40,
                    help="oxford17 training images per class (40 test images per class are drawn from the rest)")
    ap.add_argument("--part-norm", choices=("l2", "none"), default=PART_NORM,
                    help="how a concatenation's parts are scaled before they are joined "
                         "(default: deepfeat's; 'none': side by side as they are)")
    args = ap.parse_args(argv)
    part_norm = None if args.part_norm == "none" else args.part_norm
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    specs = default_space_specs()
    costs = {space_name(s): forward_passes(space_parts(s)) for s in specs}
    result = {"load_at_start": os.getloadavg(), "spaces": [space_name(s) for s in specs],
              "part_norm": args.part_norm}
    if args.only in (None, "oxford17"):
        X, y = load_xy(args.data / "oxford17")
        blocks = space_features(X, specs, args.cache, part_norm)
        runs = []
        for seed in (0, 1, 2):
            tr, te = split_per_class(y, args.train_per_class, 40, seed)
            runs.append(evaluate(blocks, y[tr], y[te], tr, te, costs))
        result["oxford17"] = runs
    if args.only in (None, "brain_mri4"):
        paths, labels, n_train = brain_sample(args.data)
        blocks = space_features(paths, specs, args.cache, part_norm)
        tr, te = np.arange(n_train), np.arange(n_train, len(paths))
        result["brain_mri4"] = [evaluate(blocks, labels[tr], labels[te], tr, te, costs)]
    result["load_at_end"] = os.getloadavg()
    for ds in ("oxford17", "brain_mri4"):
        if ds in result:
            for m in ("plain", "old_default", "new_one_space", "new_default", "cost_default"):
                accs = [r[m]["test_accuracy"] for r in result[ds]]
                secs = [r[m]["fit_seconds"] for r in result[ds]]
                passes = [r[m].get("forward_passes") or costs.get(r[m].get("space"), 1) for r in result[ds]]
                print(
                    f"{ds:10s} {m:14s} held-out {100 * np.mean(accs):.2f} % "
                    f"({', '.join(f'{100 * a:.1f}' for a in accs)}), fit {np.mean(secs):.1f} s, "
                    f"forward passes per image {', '.join(str(p) for p in passes)}"
                )
    text = json.dumps(result, indent=2, default=str)
    if args.json_out:
        Path(args.json_out).write_text(text)
    return result


if __name__ == "__main__":
    main()
