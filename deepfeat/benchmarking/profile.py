"""Where a featurize run's CPU time goes, per image and per stage.

Contention from other processes makes wall-clock figures swing; CPU time of one thread
does not (much). Each stage of deepfeat's CPU pipeline is run single-threaded over the
same photos and timed with ``time.thread_time``: read + decode, resize + crop,
normalise, forward pass (deepfeat's runtime and network, in its slices), and for
comparison the steps it replaced: Pillow decode + ``np.array``, a resize of the whole
image, a separate normalise, and the plain fp32 eager network (no folding, NCHW, batch
32). With one stream per core and perfect overlap the end to end rate cannot beat
``cores / (decode + resize + normalise + forward)`` while the model-only ceiling is
``cores / forward``: their quotient is the bound printed as ``end_to_end_vs_ceiling_bound``.
Thread CPU time still grows when other processes share the cores' caches, so the machine's
load (:func:`machine_load`) is printed beside the figures.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from deepfeat.featurize import Featurizer
from deepfeat.featurize.decode import decode_image, decode_pixels, read_bytes
from deepfeat.featurize.featurizer import JIT_MIN_IMAGES

__all__ = ["profile_stages", "machine_load"]


def machine_load() -> dict[str, Any]:
    """Load averages, core count and the number of other processes using a CPU right now.

    Busy processes are those in the running state (``R`` in ``/proc/<pid>/stat``) other than
    this one, sampled twice 0.2 s apart (the larger count is kept); ``None`` off Linux.
    """
    def running() -> int | None:
        if not os.path.isdir("/proc"):
            return None
        n = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    state = fh.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            n += state == b"R"
        return n

    first = running()
    time.sleep(0.2)
    second = running()
    busy = None if first is None else max(first, second or 0)
    return {"loadavg_1_5_15": [round(v, 2) for v in os.getloadavg()], "cores": os.cpu_count(),
            "other_running_processes": busy}


def _stage(clock, fn, items) -> tuple[float, list]:
    t = clock()
    out = [fn(x) for x in items]
    return clock() - t, out


def profile_stages(
    paths: list[str],
    backbone: str = "efficientnet_lite0",
    weights: str | None = "DEFAULT",
    repeats: int = 3,
) -> dict[str, Any]:
    """CPU milliseconds per image of each stage (median of ``repeats`` passes)."""
    load_before = machine_load()
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

    def note(name: str, seconds: float) -> None:
        stages.setdefault(name, []).append(seconds)

    try:
        datas = [read_bytes(x) for x in paths]
        for _ in range(repeats):
            t, px = _stage(clock, lambda d: decode_pixels(d, draft_size=p.draft_size), datas)
            note("read_decode", t + _stage(clock, read_bytes, paths)[0])
            t, u8 = _stage(clock, p.geometry, px)
            note("resize_crop", t)
            batches = [
                torch.stack([v.permute(1, 2, 0) for v in u8[s : s + f.batch_size]]).permute(0, 3, 1, 2)
                for s in range(0, len(u8), f.batch_size)
            ]
            t, xs = _stage(clock, f.encoder.model_input, batches)
            note("normalize", t)
            with torch.inference_mode():
                f.encoder.infer(xs[0][:2])
                note("forward", _stage(clock, f.encoder.infer, xs)[0])
                # what the shortcuts replaced
                t, pil = _stage(clock, lambda d: np.array(decode_image(d, draft_size=p.draft_size)), datas)
                note("was_pillow_decode_to_array", t)
                full = [torch.from_numpy(a).permute(2, 0, 1)[None] for a in pil]
                note("was_whole_image_resize", _stage(clock, lambda x: _whole_resize(p, x), full)[0])
                t, xn = _stage(clock, lambda b: f.encoder.layout(p.normalize(b)), batches)
                note("was_separate_normalize", t)
                xs_nchw = [x.contiguous() for x in xn]
                unfolded_nchw(xs_nchw[0][:2])
                note("was_forward_fp32_eager_unfolded_nchw_batch32", _stage(clock, unfolded_nchw, xs_nchw)[0])
    finally:
        torch.set_num_threads(before)
    ms = {k: round(float(np.median(v)) / len(paths) * 1000, 3) for k, v in stages.items()}
    pre = ms["read_decode"] + ms["resize_crop"] + ms["normalize"]
    return {
        "backbone": backbone,
        "images": len(paths),
        "runtime": f.runtime.describe() + (" traced" if f.encoder.traced is not None else ""),
        "input_normalisation_folded": bool(getattr(f.model, "takes_raw_pixels", False)),
        "cpu_ms_per_image": ms,
        "preprocess_share_of_cpu": round(pre / (pre + ms["forward"]), 3),
        "end_to_end_vs_ceiling_bound": round(ms["forward"] / (pre + ms["forward"]), 3),
        "load_before": load_before,
        "load_after": machine_load(),
    }


def _whole_resize(p: Any, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    k = p.resize / min(h, w)
    nh, nw = max(p.crop[0], round(h * k)), max(p.crop[1], round(w * k))
    y = torch.nn.functional.interpolate(x, size=(nh, nw), mode=p.interpolation, antialias=True)
    top, left = (nh - p.crop[0]) // 2, (nw - p.crop[1]) // 2
    return y[0, :, top : top + p.crop[0], left : left + p.crop[1]]
