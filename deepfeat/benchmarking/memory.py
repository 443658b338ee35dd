"""Peak memory of featurizing many images: does it stay flat as the count grows?

Each run is a fresh subprocess (``python -m deepfeat.benchmarking.memory``) that
featurizes a listing of images into a new cache with ``return_features=False`` and
reports its own peak resident set size when it is done (``VmHWM`` from
``/proc/self/status``, or ``ru_maxrss`` where there is no ``/proc``). The images are small
re-encoded variants (random crops, 160x120 JPEG) of real photos, and the backbone a
cheap one, so 20,000 images take a couple of minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["measure_memory", "make_small_variants", "peak_rss_mib", "variant_source"]

MEMORY_BACKBONE = "torchvision:mobilenet_v3_small"


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


MAX_SOURCES = 64


def variant_source(i: int, n_sources: int) -> int:
    """Index of the source photo that small variant ``i`` was cut from."""
    return i % min(n_sources, MAX_SOURCES)


def make_small_variants(sources: list[str], dst: Path, n: int, *, seed: int = 0) -> list[str]:
    """``n`` distinct 160x120 JPEGs: random crops of the first 64 ``sources`` photos.

    Variant ``i`` comes from ``sources[variant_source(i, len(sources))]``; files already
    made by an earlier run are reused.
    """
    dst.mkdir(parents=True, exist_ok=True)
    listing = dst / f"listing-{n}.txt"
    if listing.exists():
        paths = listing.read_text().split("\n")
        if len(paths) == n and all(os.path.exists(p) for p in (paths[0], paths[-1])):
            return paths
    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in sources[:MAX_SOURCES]]
    paths = []
    for i in range(n):
        img = photos[variant_source(i, len(photos))]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.5, 0.9)), int(h * rng.uniform(0.5, 0.9))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        p = dst / f"s{i:06d}.jpg"
        if not p.exists():
            img.crop((x, y, x + cw, y + ch)).resize((160, 120), Image.Resampling.BILINEAR).save(
                p, quality=85
            )
        paths.append(str(p))
    listing.write_text("\n".join(paths))
    return paths


def _child(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("listing")
    ap.add_argument("cache")
    ap.add_argument("--backbone", default=MEMORY_BACKBONE)
    a = ap.parse_args(argv)
    from deepfeat.featurize import Featurizer

    paths = Path(a.listing).read_text().split("\n")
    weights = None if a.backbone != "efficientnet_lite0" else "DEFAULT"
    f = Featurizer(a.backbone, weights=weights, device="cpu", cache=a.cache)
    t0 = time.perf_counter()
    res = f.featurize(paths, return_features=False)
    sec = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "images": len(paths),
                "featurized": res.summary["featurized"],
                "seconds": round(sec, 2),
                "peak_rss_mib": round(peak_rss_mib(), 1),
                "dim": f.dim,
            }
        )
    )


def _run_child(listing: Path, cache: Path, backbone: str) -> dict[str, Any]:
    for suffix in ("", ".journal"):
        Path(str(cache) + suffix).unlink(missing_ok=True)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepfeat.benchmarking.memory",
            str(listing),
            str(cache),
            "--backbone",
            backbone,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed ({out.returncode}): {out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["cache_mib"] = round(os.path.getsize(cache) / 2**20, 1)
    return res


def measure_memory(
    sources: list[str],
    workdir: Path,
    *,
    small: int = 2000,
    large: int = 20000,
    backbone: str = MEMORY_BACKBONE,
) -> dict[str, Any]:
    """Peak RSS featurizing ``small`` and then ``large`` images, each in a fresh process.

    Returns the figures and the caches' paths (``caches``), which the head-search
    benchmark reuses as its embeddings.
    """
    imgs = workdir / "small-variants"
    paths = make_small_variants(sources, imgs, large)
    runs = {}
    for n in (small, large):
        listing = workdir / f"memory-{n}.txt"
        listing.write_text("\n".join(paths[:n]))
        runs[n] = _run_child(listing, workdir / f"memory-{n}.h5", backbone)
    lo, hi = runs[small]["peak_rss_mib"], runs[large]["peak_rss_mib"]
    return {
        "backbone": f"{backbone} (random weights)"
        if backbone != "efficientnet_lite0"
        else backbone,
        "images_small": small,
        "images_large": large,
        "peak_rss_mib_small": lo,
        "peak_rss_mib_large": hi,
        "peak_growth_percent": round((hi / lo - 1) * 100, 2),
        "runs": {str(k): v for k, v in runs.items()},
        "listing": str(workdir / f"memory-{large}.txt"),
        "cache": str(workdir / f"memory-{large}.h5"),
    }


if __name__ == "__main__":
    _child(sys.argv[1:])
