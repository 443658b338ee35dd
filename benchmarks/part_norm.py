"""How the parts of a concatenated space are joined: held-out accuracy on the ensemble space
(the default candidates' last space) with its parts side by side as they are, each part's
rows at unit length (``join_parts``' default, ``PART_NORM = "l2"``), or each standardized
part weighted by 1/sqrt(its width); with the default head search and the plain baseline.

Usage::

    python benchmarks/part_norm.py --cache /work/cache/select.h5

Data (``../shared/datasets``): oxford17 40/40 and 10/40 per class, seeds 0-2; brain_mri4
the sample of ``benchmarks/select_compare.py`` (100 per class to train, 400 test images)
and 3 draws of 20 per class from its training part. Every fit runs with BLAS on one thread.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
from select_compare import (  # noqa: E402
    DATA,
    brain_sample,
    plain_baseline,
    space_features,
    split_per_class,
)

from deepfeat.classify import load_xy  # noqa: E402
from deepfeat.classify.search import EmbeddingClassifier  # noqa: E402
from deepfeat.classify.spaces import default_space_specs, join_parts, space_name  # noqa: E402


def _weighted(parts: list[np.ndarray], tr: np.ndarray) -> np.ndarray:
    """Each part standardized on the training rows and scaled by 1/sqrt(its width)."""
    out = []
    for p in parts:
        mu, sd = p[tr].mean(0), p[tr].std(0) + 1e-6
        out.append((p - mu) / sd / np.sqrt(p.shape[1]))
    return np.hstack(out)


def run(name: str, parts: list[np.ndarray], y: np.ndarray, splits) -> dict[str, list[float]]:
    res: dict[str, list[float]] = {}
    for tr, te in splits:
        variants = {"side by side": join_parts(parts, None), "unit length": join_parts(parts, "l2"),
                    "1/sqrt(width)": _weighted(parts, tr)}
        for vn, X in variants.items():
            heads = (("default", EmbeddingClassifier),) if vn == "1/sqrt(width)" else (
                ("default", EmbeddingClassifier), ("plain", plain_baseline))
            for hn, make in heads:
                with threadpool_limits(limits=1, user_api="blas"):
                    model = make().fit(X[tr], y[tr])
                res.setdefault(f"{vn} / {hn}", []).append(float((model.predict(X[te]) == y[te]).mean()))
    for k, v in res.items():
        print(f"{name:28s} {k:24s} {100 * np.mean(v):6.2f} %  ({', '.join(f'{100 * a:.1f}' for a in v)})",
              flush=True)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    ens = default_space_specs()[-1]

    def parts_of(paths):
        return [space_features(paths, [p], args.cache)[space_name(p)] for p in ens]

    X, y = load_xy(args.data / "oxford17")
    P = parts_of(X)
    run("oxford17 40/40, 3 seeds", P, y, [split_per_class(y, 40, 40, s) for s in (0, 1, 2)])
    run("oxford17 10/40, 3 seeds", P, y, [split_per_class(y, 10, 40, s) for s in (0, 1, 2)])

    paths, lab, n_train = brain_sample(args.data)
    P = parts_of(paths)
    tr, te = np.arange(n_train), np.arange(n_train, len(lab))
    run("brain_mri4 100 per class", P, lab, [(tr, te)])
    draws = []
    for s in range(3):
        rng = np.random.default_rng(s)
        sub = np.concatenate([rng.choice(np.flatnonzero(lab[tr] == c), 20, replace=False) for c in np.unique(lab)])
        draws.append((np.sort(sub), te))
    run("brain_mri4 20 per class", P, lab, draws)


if __name__ == "__main__":
    main()
