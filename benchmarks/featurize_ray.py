"""Featurize the same images with the local engine and with Ray, in one run.

Usage::

    python benchmarks/featurize_ray.py [--images 20000] [--size 64] [--backbone timm:test_resnet] [--rounds 2]
    python benchmarks/featurize_ray.py --photos ../shared/datasets/oxford17 --backbone efficientnet_lite0

(``deepfeat bench --parts ray`` runs the second form on the benchmark photos.) Two workloads:

* default: random-pixel 64 px JPEGs made here and a tiny random-weight network, so the
  engines' fixed costs dominate (the worst case for Ray's overhead);
* ``--photos DIR``: a real job, ``--images`` distinct photos made from the JPEGs under DIR
  (:func:`deepfeat.benchmarking.ray_overhead.make_photos`), featurized with the named
  backbone's pretrained weights.

Rounds alternate the engines' order; the overhead is the median of per-round ratios
(:func:`deepfeat.benchmarking.ray_overhead.measure_ray_overhead`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from deepfeat.benchmarking.ray_overhead import make_photos, measure_ray_overhead


def _images(folder: str, n: int, size: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = os.path.join(folder, f"{i:06d}.jpg")
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p, quality=85)
        paths.append(p)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--backbone", default="timm:test_resnet")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--address", default=None)
    p.add_argument("--folder", default=None)
    p.add_argument("--photos", default=None, help="make the images from the JPEGs under this folder")
    p.add_argument("--photo-size", type=int, default=320)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (median of per-round ratios)")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=a.folder) as d:
        if a.photos:
            src = sorted(str(q) for q in Path(a.photos).rglob("*") if q.suffix.lower() in (".jpg", ".jpeg"))
            paths = make_photos(src, a.images, os.path.join(d, "images"), a.photo_size)
            workload = f"distinct photos from {a.photos}, short side {a.photo_size}"
        else:
            os.makedirs(os.path.join(d, "images"))
            paths = _images(os.path.join(d, "images"), a.images, a.size)
            workload = f"random-pixel {a.size} px JPEGs"
        out = measure_ray_overhead(paths, os.path.join(d, "caches"), backbone=a.backbone,
                                   weights="DEFAULT" if a.photos else None, rounds=a.rounds,
                                   batch_size=a.batch_size, address=a.address)
        out["workload"] = workload
        out["load_after"] = list(os.getloadavg())
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
