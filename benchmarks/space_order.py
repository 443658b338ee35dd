"""Does ordering the candidate spaces help ``fit`` with very few labels? Paired draws.

``fit`` keeps the first-listed candidate space of a modality in
:data:`deepfeat.classify.spaces.ORDERED_MODALITIES` unless another space of no higher cost
beats it beyond one standard error. This script fits ``TransferClassifier`` with its
defaults twice on each draw, with the text (or image) spaces ordered and not, and scores
both on the same held-out items; for texts it adds frozen MiniLM + plain logistic
regression (the issue's reference) on the same draws.

Texts: the UCI sentiment sets and SMS spam (``benchmarks/text_quality.py``'s sets, draws and
scores: accuracy, macro-F1 for spam). Images: ``oxford17`` (the first 40 photos of each
class are the pool, the other 40 the test set) or ``brain_mri4`` (its train/ and test/).

Usage::

    DEEPFEAT_DATASETS=../shared/datasets python benchmarks/space_order.py --sets imdb,yelp,amazon,spam --k 8
    DEEPFEAT_DATASETS=../shared/datasets python benchmarks/space_order.py --sets brain_mri4 --k 10 --draws 5

Prints, per set, the mean score of each variant and the paired difference with its 95 %
bootstrap interval over the draws, and the chosen space of every fit with ``-v``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import text_quality as tq  # noqa: E402 - the text sets, draws, scores and interval

import deepfeat.classify.transfer as transfer  # noqa: E402
from deepfeat.classify import EmbeddingClassifier, ImageEmbedder, TransferClassifier  # noqa: E402

IMAGE_SETS = ("oxford17", "brain_mri4")
DATA = Path(os.environ.get("DEEPFEAT_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))


def image_split(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pool paths, pool labels, test paths, test labels."""
    root = DATA / name
    pool: list[tuple[str, str]] = []
    test: list[tuple[str, str]] = []
    if name == "oxford17":
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            files = sorted(d.glob("*.jpg"))
            pool += [(str(f), d.name) for f in files[:40]]
            test += [(str(f), d.name) for f in files[40:]]
    else:
        for split, out in (("train", pool), ("test", test)):
            out += [(str(f), d.name) for d in sorted((root / split).iterdir()) for f in sorted(d.iterdir())]
    return (np.array([p for p, _ in pool]), np.array([c for _, c in pool]),
            np.array([p for p, _ in test]), np.array([c for _, c in test]))


def fit_default(X: list[Any], y: np.ndarray, seed: int, ordered: bool, cache: str | None) -> TransferClassifier:
    """``TransferClassifier`` with its defaults (an explicit cache for images), the text
    spaces ordered or not (the module constant ``fit`` reads, swapped for this one fit)."""
    before = transfer.ORDERED_MODALITIES
    transfer.ORDERED_MODALITIES = frozenset({"text", "image"}) if ordered else frozenset()
    try:
        emb = ImageEmbedder(cache=cache) if cache else "minilm"
        return TransferClassifier(emb, EmbeddingClassifier(random_state=seed)).fit(X, y)
    finally:
        transfer.ORDERED_MODALITIES = before


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="imdb,yelp,amazon,spam")
    ap.add_argument("--k", type=int, default=8, help="labels per class")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--max-test", type=int, default=300, help="test items per draw (texts) or in all (images)")
    ap.add_argument("--cache", default="space_order_cache", help="folder for the image feature caches")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every fit's choice")
    a = ap.parse_args(argv)
    print(f"CPU: {tq.cpu_name()}; k={a.k}, {a.draws} draws")
    for name in a.sets.split(","):
        rows: dict[str, list[float]] = {"ordered": [], "unordered": [], "frozen_lr": []}
        if name in IMAGE_SETS:
            P, Y, Pt, Yt = image_split(name)
            te = np.sort(np.random.default_rng(0).choice(len(Pt), min(a.max_test, len(Pt)), replace=False))
            Pt, Yt = list(Pt[te]), Yt[te]
            os.makedirs(a.cache, exist_ok=True)
            cache = os.path.join(a.cache, f"{name}.h5")
            for d in range(a.draws):
                rng = np.random.default_rng([d, a.k, 7])
                tr = np.sort(np.concatenate([rng.choice(np.flatnonzero(Y == c), a.k, replace=False) for c in np.unique(Y)]))
                for variant in ("ordered", "unordered"):
                    clf = fit_default(list(P[tr]), Y[tr], d, variant == "ordered", cache)
                    rows[variant].append(float((clf.predict(Pt) == Yt).mean()))
                    if a.verbose:
                        print(f"  {name} draw {d} {variant}: {rows[variant][-1]:.3f} {clf.space_} {clf.best_params_}")
            del rows["frozen_lr"]
        else:
            X, y = tq.load_set(DATA / "text", name)
            set_seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
            from deepfeat.text_finetune import default_model_dir

            frozen = tq.FrozenMiniLM(default_model_dir(), X)
            for d in range(a.draws):
                tr, te = tq.draw(y, a.k, (set_seed, a.k, d), a.max_test)
                _, pred = frozen.fit(tr, te, y[tr])
                rows["frozen_lr"].append(tq.score(name, y[te], pred))
                for variant in ("ordered", "unordered"):
                    clf = fit_default(list(X[tr]), y[tr], d, variant == "ordered", None)
                    rows[variant].append(tq.score(name, y[te], clf.predict(list(X[te]))))
                    if a.verbose:
                        print(f"  {name} draw {d} {variant}: {rows[variant][-1]:.3f} {clf.space_} {clf.best_params_}")
        r = {k: np.array(v) for k, v in rows.items()}
        line = ", ".join(f"{k} {v.mean() * 100:.1f}" for k, v in r.items())
        print(f"{name}: {line}")
        pairs = [("ordered", "unordered")] + ([("ordered", "frozen_lr"), ("unordered", "frozen_lr")] if "frozen_lr" in r else [])
        for x, z in pairs:
            diff = r[x] - r[z]
            lo, hi = tq.paired_interval(diff)
            print(f"   {x} - {z}: {diff.mean() * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
