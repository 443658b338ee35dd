"""Featurize the same generated images with the local engine and with Ray, in one run.

Usage: python benchmarks/featurize_ray.py [--images 20000] [--size 64] [--backbone timm:test_resnet]

Each engine fills a fresh cache; the images are random-pixel JPEGs made here, the backbone has
random weights by default (the engines' overhead, not the network, is measured). Ray is started
locally with 2 CPUs (one actor: a CPU stays free for Ray Data), or joins --address.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--backbone", default="timm:test_resnet")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--address", default=None)
    p.add_argument("--folder", default=None)
    a = p.parse_args(argv)
    out = {"images": a.images, "size": a.size, "backbone": a.backbone, "weights": "random"}
    with tempfile.TemporaryDirectory(dir=a.folder) as d:
        paths = _images(d, a.images, a.size)
        kw = {"backbone": a.backbone, "weights": None, "device": "cpu", "batch_size": a.batch_size}
        if a.address is None:
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     _system_config={"worker_niceness": 0})  # as deepfeat starts its own Ray
        for engine in ("local", "ray"):
            out[f"load_before_{engine}"] = list(os.getloadavg())
            f = Featurizer(cache=os.path.join(d, f"{engine}.h5"), engine=engine, ray_address=a.address, **kw)
            t0 = time.perf_counter()
            res = f.featurize(paths, return_features=False)
            out[f"{engine}_seconds"] = round(time.perf_counter() - t0, 2)
            out[f"{engine}_featurized"] = res.summary["featurized"]
        out["ray_overhead"] = round(out["ray_seconds"] / out["local_seconds"] - 1, 3)
        out["load_after"] = list(os.getloadavg())
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
