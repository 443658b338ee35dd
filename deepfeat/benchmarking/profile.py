"""Where a featurize run's CPU time goes, per image and per stage.

Contention from other processes makes wall-clock figures swing; CPU time of one thread
does not (much). Each stage of deepfeat's CPU pipeline is run single-threaded over the
same photos and timed with ``time.thread_time``: read + decode, resize + crop,
normalise, forward pass (deepfeat's runtime and network, in its slices), and for
comparison the plain fp32 eager network (no batch-norm folding, NCHW, batch 32). With one
stream per core and perfect overlap the end to end rate cannot beat
``cores / (decode + resize + normalise + forward)`` while the model-only ceiling is
``cores / forward``: their quotient is the bound printed as ``end_to_end_vs_ceiling_bound``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from deepfeat.featurize import Featurizer
from deepfeat.featurize.decode import decode_image, read_bytes
from deepfeat.featurize.featurizer import JIT_MIN_IMAGES

__all__ = ["profile_stages"]


def profile_stages(
    paths: list[str],
    backbone: str = "efficientnet_lite0",
    weights: str | None = "DEFAULT",
    repeats: int = 3,
) -> dict[str, Any]:
    """CPU milliseconds per image of each stage (median of ``repeats`` passes)."""
    f = Featurizer(backbone, weights=weights, device="cpu")  # the runtime a real run uses
    f.prepare(max(len(paths), JIT_MIN_IMAGES))  # ... and the network of a large job
    plain = Featurizer(
        backbone, weights=weights, device="cpu", precision="fp32", channels_last=False
    )
    from deepfeat.benchmarking.contenders import plain_network

    unfolded_nchw = plain_network(plain)
    p = f.preprocess
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    clock = time.thread_time
    stages: dict[str, list[float]] = {}
    try:
        for _ in range(repeats):
            t = clock()
            imgs = [decode_image(x, draft_size=p.draft_size, data=read_bytes(x)) for x in paths]
            stages.setdefault("read_decode", []).append(clock() - t)
            t = clock()
            u8 = [p.geometry(im) for im in imgs]
            stages.setdefault("resize_crop", []).append(clock() - t)
            batches = [
                torch.stack([v.permute(1, 2, 0) for v in u8[s : s + f.batch_size]]).permute(
                    0, 3, 1, 2
                )
                for s in range(0, len(u8), f.batch_size)
            ]
            t = clock()
            xs = [f._model_input(b) for b in batches]
            stages.setdefault("normalize", []).append(clock() - t)
            with torch.inference_mode():
                f._infer(xs[0][:2])
                t = clock()
                for x in xs:
                    f._infer(x)
                stages.setdefault("forward", []).append(clock() - t)
                xs_nchw = [x.contiguous() for x in xs]
                unfolded_nchw(xs_nchw[0][:2])
                t = clock()
                for x in xs_nchw:
                    unfolded_nchw(x)
                stages.setdefault("forward_fp32_eager_unfolded_nchw_batch32", []).append(clock() - t)
    finally:
        torch.set_num_threads(before)
    ms = {k: round(float(np.median(v)) / len(paths) * 1000, 2) for k, v in stages.items()}
    pre = ms["read_decode"] + ms["resize_crop"] + ms["normalize"]
    return {
        "backbone": backbone,
        "images": len(paths),
        "runtime": f.runtime.describe() + (" traced" if f._traced is not None else ""),
        "cpu_ms_per_image": ms,
        "preprocess_share_of_cpu": round(pre / (pre + ms["forward"]), 3),
        "end_to_end_vs_ceiling_bound": round(ms["forward"] / (pre + ms["forward"]), 3),
    }
