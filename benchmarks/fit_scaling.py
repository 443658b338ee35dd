"""Warm-cache fit time of the head search vs the number of rows (synthetic embeddings).

Synthetic 1280-d embeddings of 100 classes (class means on a sphere plus noise, so the
problem is learnable but not trivial). For each n the new default search
(:class:`~deepfeat.classify.search.EmbeddingClassifier` defaults) and the automatic
selection over three spaces of the same rows (the penultimate-like block, a 192-d late
block, and their concatenation) and over the five of ``deepfeat fit``'s default (those,
a flip-averaged copy, and a 4,400-d ensemble of noisy copies, which ``fit`` skips above
``ENSEMBLE_MAX_IMAGES`` rows unless ``--ensemble``) are timed; the
previous default search is timed at the smallest n only (it is the slow one), in the
same run, so the ratio holds under the same load. The load average is printed.

Usage::

    python benchmarks/fit_scaling.py [--sizes 1000,3000,10000] [--classes 100]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from deepfeat.classify.candidates import HEADS
from deepfeat.classify.search import EmbeddingClassifier
from deepfeat.classify.select_space import select_space
from deepfeat.classify.transfer import ENSEMBLE_MAX_IMAGES


def synthetic(n: int, classes: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, dim))
    y = np.arange(n) % classes
    X = means[y] * 0.15 + rng.normal(size=(n, dim))
    return X.astype(np.float32), y


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,3000,10000")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--ensemble", action="store_true",
                    help=f"keep the ensemble space above {ENSEMBLE_MAX_IMAGES} rows (fit skips it there)")
    ap.add_argument("--old", action="store_true", help="also time the previous default at the smallest n")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    print(f"load average at start {os.getloadavg()}")
    for n in sizes:
        X, y = synthetic(n, args.classes, 1280)
        late = X[:, :192] * 1.0
        row = {"n": n}
        t0 = time.perf_counter()
        one = EmbeddingClassifier().fit(X, y)
        row["new_one_space_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        choice = select_space({"pen": X, "late": late, "pen+late": np.hstack([X, late])}, y)
        row["new_three_spaces_s"] = round(time.perf_counter() - t0, 1)
        row["honest"] = round(choice.honest_score, 3)
        # the five default spaces of `deepfeat fit`: the three above, a flip-averaged
        # copy, and the zoo ensemble (three 1280-d penultimates and three late blocks)
        rng = np.random.default_rng(1)
        flip = X + 0.1 * rng.normal(size=X.shape)
        default = {"pen": X, "late": late, "pen+late": np.hstack([X, late]), "flip": flip}
        if n <= ENSEMBLE_MAX_IMAGES or args.ensemble:  # built only where it is searched
            default["ensemble"] = np.hstack(
                [flip, X + 0.3 * rng.normal(size=X.shape), X + 0.3 * rng.normal(size=X.shape),
                 late, late + 0.3 * rng.normal(size=late.shape), late[:, :176]])
            row["ensemble_dim"] = default["ensemble"].shape[1]
        t0 = time.perf_counter()
        choice = select_space(default, y)
        row[f"new_default_{len(default)}_spaces_s"] = round(time.perf_counter() - t0, 1)
        row["one_space_candidates"] = len(one.cv_results_["params"])
        if args.old and n == sizes[0]:
            t0 = time.perf_counter()
            EmbeddingClassifier(
                HEADS, preprocessing=("standardize", "l2"), grid="full", selection="best"
            ).fit(X, y)
            row["old_default_s"] = round(time.perf_counter() - t0, 1)
        row["load"] = [round(v, 1) for v in os.getloadavg()]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
