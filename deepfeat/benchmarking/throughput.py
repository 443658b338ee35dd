"""Images per second of the four contenders, measured side by side.

The contenders run one after another in a rotating order, ``repeats`` times; each one's
figure is the median of its runs, and each ratio is the median of the per-round ratios
(a round holds one run of every contender, so slow spells of a shared machine hit both
sides of a ratio alike).
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepfeat.benchmarking.contenders import make_contenders
from deepfeat.featurize import Featurizer

__all__ = ["measure_throughput", "RATIOS"]

log = logging.getLogger(__name__)

#: ratio name -> (numerator contender, denominator contender)
RATIOS = {
    "end_to_end_vs_ceiling": ("deepfeat", "ceiling"),
    "speedup_vs_naive": ("deepfeat", "naive"),
    "speedup_vs_dataloader": ("deepfeat", "tutorial"),
}


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float((num / den).min())


def _warm_files(paths: list[str]) -> None:
    for p in paths:
        with open(p, "rb") as fh:
            fh.read()


def measure_throughput(
    backbone: str,
    paths: list[str],
    root: Path,
    workdir: Path,
    *,
    repeats: int = 3,
    weights: str | None = "DEFAULT",
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 32,
) -> dict[str, Any]:
    """Time the four contenders on ``paths`` with ``backbone``; return figures and ratios.

    Returns
    -------
    dict
        ``images``, ``backbone``, ``runtime``; ``contenders`` (per name: description,
        ``images_per_second`` median, ``runs`` list, ``min_cosine_vs_deepfeat``); and
        the ratios of :data:`RATIOS` (median of per-round ratios) with their per-round values.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    f = Featurizer(
        backbone,
        weights=weights,
        device=device,
        precision=precision,
        batch_size=batch_size,
        cache=workdir / f"e2e-{backbone.replace(':', '_')}.h5",
        lock_timeout=60,
    )
    t0 = time.perf_counter()
    # build (fold, and for a job this size trace) the network outside the timed runs, as
    # the other contenders build theirs
    f.prepare(len(paths))
    build_s = time.perf_counter() - t0
    _warm_files(paths)
    contenders = make_contenders(f, paths, root, workdir)
    # one untimed call warms oneDNN's kernel caches for a small shape
    x = f.encoder.model_input(torch.zeros(2, 3, *f.preprocess.crop, dtype=torch.uint8))
    f.encoder.infer(x)
    runs: dict[str, list[float]] = {c.name: [] for c in contenders}
    outputs: dict[str, np.ndarray] = {}
    rounds: list[dict[str, float]] = []
    for r in range(repeats):
        order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
        this: dict[str, float] = {}
        for c in order:
            emb, sec = c.run()
            ips = len(paths) / sec
            runs[c.name].append(ips)
            this[c.name] = ips
            outputs.setdefault(c.name, emb)
            log.info("%s round %d: %-9s %7.2f images/s", backbone, r + 1, c.name, ips)
        rounds.append(this)
    ref = outputs["deepfeat"]
    result: dict[str, Any] = {
        "backbone": backbone,
        "weights": "random" if weights is None else weights,
        "images": len(paths),
        "repeats": repeats,
        "runtime": f.runtime.describe(),
        "batch_size": f.batch_size,
        "torch_threads": torch.get_num_threads(),
        "model_build_seconds": round(build_s, 2),
        "traced": f.encoder.traced is not None,
        "contenders": {},
    }
    for c in contenders:
        result["contenders"][c.name] = {
            "description": c.description,
            "images_per_second": round(statistics.median(runs[c.name]), 2),
            "runs": [round(v, 2) for v in runs[c.name]],
            "min_cosine_vs_deepfeat": round(_min_cosine(outputs[c.name], ref), 5),
        }
    for name, (num, den) in RATIOS.items():
        per_round = [rd[num] / rd[den] for rd in rounds]
        result[name] = round(statistics.median(per_round), 3)
        result[name + "_rounds"] = [round(v, 3) for v in per_round]
    return result
