"""Featurize the same generated images with the local engine and with Ray, in one run.

Usage::

    python benchmarks/featurize_ray.py [--images 20000] [--size 64] [--backbone timm:test_resnet] [--rounds 2]
    python benchmarks/featurize_ray.py --photos ../shared/datasets/oxford17 --backbone efficientnet_lite0

Each engine fills a fresh cache. Two workloads:

* default: random-pixel 64 px JPEGs made here and a tiny random-weight network, so the
  engines' fixed costs dominate (the worst case for Ray's overhead);
* ``--photos DIR``: a real job, ``--images`` distinct photos made from the JPEGs under DIR
  (each a shifted crop, short side ``--photo-size`` px, so no two share content and none is
  deduplicated), featurized with the named backbone's pretrained weights.

Ray is started locally with 2 CPUs (one actor: a CPU stays free for Ray Data), or joins
--address. Ray's fixed costs (worker start, importing Ray Data and torch in the actor,
building the model) are also printed, from the actor's first call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deepfeat.featurize import Featurizer


def _images(folder: str, n: int, size: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = os.path.join(folder, f"{i:06d}.jpg")
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p, quality=85)
        paths.append(p)
    return paths


def _photo_job(args: tuple[str, int, int, str]) -> str:
    src, v, size, out = args
    im = Image.open(src).convert("RGB")
    w, h = im.size
    dx, dy = (v * 7) % max(1, w // 8), (v * 11) % max(1, h // 8)
    im = im.crop((dx, dy, w - (w // 8 - dx), h - (h // 8 - dy)))
    s = size / min(im.size)
    im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.BICUBIC).save(out, quality=90)
    return out


def _photos(folder: str, n: int, source: str, size: int) -> list[str]:
    """``n`` distinct photos from the JPEGs under ``source``: shifted crops, re-encoded."""
    from multiprocessing import Pool

    src = sorted(str(p) for p in Path(source).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not src:
        raise SystemExit(f"--photos {source}: no JPEG found")
    jobs = [(src[i % len(src)], i // len(src), size, os.path.join(folder, f"{i:06d}.jpg")) for i in range(n)]
    with Pool(os.cpu_count()) as pool:
        return pool.map(_photo_job, jobs, chunksize=200)


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
    weights = "DEFAULT" if a.photos else None
    out = {"images": a.images, "backbone": a.backbone, "weights": weights or "random",
           "workload": f"photos from {a.photos}, short side {a.photo_size}" if a.photos
           else f"random-pixel {a.size} px JPEGs"}
    with tempfile.TemporaryDirectory(dir=a.folder) as d:
        paths = _photos(d, a.images, a.photos, a.photo_size) if a.photos else _images(d, a.images, a.size)
        kw = {"backbone": a.backbone, "weights": weights, "device": "cpu", "batch_size": a.batch_size}
        if a.address is None:
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     _system_config={"worker_niceness": 0})  # as deepfeat starts its own Ray
        # Rounds alternate the order (local, ray / ray, local): a slow spell of a shared
        # machine hits both engines alike; the overhead is the median of per-round ratios.
        import statistics

        rounds = []
        for r in range(a.rounds):
            this = {}
            for engine in ("local", "ray") if r % 2 == 0 else ("ray", "local"):
                f = Featurizer(cache=os.path.join(d, f"{engine}-{r}.h5"), engine=engine,
                               ray_address=a.address, **kw)
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                res = f.featurize(paths, return_features=False)
                this[f"{engine}_seconds"] = round(time.perf_counter() - t0, 2)
                this[f"{engine}_featurized"] = res.summary["featurized"]
                this[f"{engine}_load_before"] = round(load, 2)
                print(f"round {r + 1}: {engine} {this[f'{engine}_seconds']} s", file=sys.stderr, flush=True)
            this["ray_overhead"] = round(this["ray_seconds"] / this["local_seconds"] - 1, 3)
            rounds.append(this)
        out["rounds"] = rounds
        out["local_seconds"] = statistics.median(r["local_seconds"] for r in rounds)
        out["ray_seconds"] = statistics.median(r["ray_seconds"] for r in rounds)
        out["ray_overhead"] = round(statistics.median(r["ray_overhead"] for r in rounds), 3)
        out["load_after"] = list(os.getloadavg())
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
