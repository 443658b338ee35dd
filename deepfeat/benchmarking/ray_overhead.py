"""Ray's overhead: the same featurize job with the local engine and with Ray, in one run.

Each engine fills a fresh cache with the same distinct photos (shifted crops of real JPEGs,
re-encoded, so no two share content and none is deduplicated), in rounds that alternate the
order (local, ray / ray, local): a slow spell of a shared machine hits both engines alike.
The overhead is the median of the per-round ratios ``ray_seconds / local_seconds - 1``.

Ray is started here with 2 CPUs (as ``Featurizer(engine="ray")`` starts its own) before the
first round, or joined at ``address``; each Ray job pays its actor's start (a worker
process, importing Ray Data and torch, building the model), as every real job does.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["make_photos", "measure_ray_overhead"]

log = logging.getLogger(__name__)


def _photo_job(args: tuple[str, int, int, str]) -> str:
    src, v, size, out = args
    with Image.open(src) as im:
        im = im.convert("RGB")
    w, h = im.size
    dx, dy = (v * 7) % max(1, w // 8), (v * 11) % max(1, h // 8)
    im = im.crop((dx, dy, w - (w // 8 - dx), h - (h // 8 - dy)))
    s = size / min(im.size)
    im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.BICUBIC).save(out, quality=90)
    return out


def make_photos(sources: list[str], n: int, folder: str | os.PathLike, size: int = 320) -> list[str]:
    """``n`` distinct JPEGs in ``folder`` made from ``sources``: shifted crops, short side ``size``."""
    if not sources:
        raise ValueError("make_photos: no source image")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(sources[i % len(sources)]), i // len(sources), size, str(folder / f"{i:06d}.jpg"))
            for i in range(n)]
    from deepfeat.featurize.runtime import cpu_count

    with Pool(cpu_count()) as pool:
        return pool.map(_photo_job, jobs, chunksize=200)


def measure_ray_overhead(paths: list[str], workdir: str | os.PathLike, *, backbone: str = "efficientnet_lite0",
                         weights: str | None = "DEFAULT", rounds: int = 2, batch_size: int = 64,
                         address: str | None = None) -> dict[str, Any]:
    """Featurize ``paths`` with both engines in alternating rounds; return times and the overhead.

    Returns
    -------
    dict
        ``rounds`` (per round: seconds, images featurized and load per engine, the ratio),
        the medians ``local_seconds``, ``ray_seconds``, ``ray_overhead``; or ``skipped``
        with the reason when Ray Data is not installed.
    """
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"Ray Data is not installed ({exc}): pip install 'deepfeat[ray]'"}
    from deepfeat.featurize import Featurizer
    from deepfeat.featurize.ray_engine import init_ray

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = not ray.is_initialized() and address is None
    init_ray(address)
    out: dict[str, Any] = {"images": len(paths), "backbone": backbone,
                           "weights": "random" if weights is None else weights,
                           "ray_resources": {k: v for k, v in ray.cluster_resources().items()
                                             if k in ("CPU", "GPU")}}
    try:
        per_round = []
        for r in range(rounds):
            this: dict[str, Any] = {}
            for engine in ("local", "ray") if r % 2 == 0 else ("ray", "local"):
                f = Featurizer(backbone, weights=weights, device="cpu", batch_size=batch_size,
                               cache=workdir / f"{engine}-{r}.h5", engine=engine, ray_address=address)
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                res = f.featurize(paths, return_features=False)
                this[f"{engine}_seconds"] = round(time.perf_counter() - t0, 2)
                this[f"{engine}_featurized"] = res.summary["featurized"]
                this[f"{engine}_load_before"] = round(load, 2)
                log.info("ray overhead round %d: %s %.1f s", r + 1, engine, this[f"{engine}_seconds"])
            this["ray_overhead"] = round(this["ray_seconds"] / this["local_seconds"] - 1, 3)
            per_round.append(this)
    finally:
        if started:
            ray.shutdown()
    out["rounds"] = per_round
    out["local_seconds"] = statistics.median(r["local_seconds"] for r in per_round)
    out["ray_seconds"] = statistics.median(r["ray_seconds"] for r in per_round)
    out["ray_overhead"] = round(statistics.median(r["ray_overhead"] for r in per_round), 3)
    out["featurized_equal"] = all(r["local_featurized"] == r["ray_featurized"] for r in per_round)
    return out
