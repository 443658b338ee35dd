"""What a feature space costs at inference: forward passes per image, and measured ms.

Every candidate space of ``fit`` carries its cost, and the choice weighs it (the one-SE
rule of :mod:`deepfeat.classify.select_rule` prefers the cheaper of spaces within noise
of each other). Two figures:

* **forward passes per image** (:func:`forward_passes`): one per part, two for a
  flip-averaged part (the image and its mirror). Exact and the same on every machine:
  this is what the choice compares.
* **ms per image** (:func:`time_part`): a few timed batches of each part's network on
  this machine (the network already built; no decoding), summed over a space's parts.
  A figure for the user and the bound ``max_ms_per_image``; it varies with the load.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "forward_passes", "time_part", "space_cost", "TIMED_IMAGES", "machine", "bounded",
]

#: Images in each timed batch of :func:`time_part` (two batches, the faster counts).
TIMED_IMAGES = 4

#: ms per image already measured in this process, by network and runtime: every ``fit``
#: times the networks of its candidate spaces, and a process that fits again (a notebook,
#: a search over folds or settings, the test suite) would otherwise re-run the same timed
#: batches each time, which on a warm cache is most of a fit's time.
_timed: dict[tuple, float] = {}
_timed_lock = threading.Lock()


def _timing_key(featurizer: Any, n_images: int, repeats: int) -> tuple | None:
    """What a timing depends on: the network (its fingerprint) and how it runs."""
    fp = getattr(featurizer, "fingerprint", None)
    if not isinstance(fp, str):
        return None
    import torch

    runtime = getattr(featurizer, "runtime", None)
    return (type(featurizer).__qualname__, fp, str(getattr(runtime, "device", None)),
            runtime.describe() if runtime is not None else None, repr(getattr(featurizer, "jit", None)),
            getattr(featurizer, "batch_size", None), torch.get_num_threads(), n_images, repeats)


def forward_passes(parts: Sequence[Mapping[str, Any]]) -> int:
    """Network runs per image of a space: one per part, two for a flip-averaged part, none
    for the fitted TF-IDF space.

    Examples
    --------
    >>> forward_passes([{"backbone": "a", "tta": "flip"}, {"backbone": "a", "layer": "blocks.5"}])
    3
    """
    return sum(0 if p.get("backbone") == "tfidf" else 2 if p.get("tta", "none") == "flip" else 1
               for p in parts)


def time_part(featurizer: Any, n_images: int = TIMED_IMAGES, repeats: int = 2) -> float:
    """Milliseconds per image of ``featurizer``'s network on a uint8 batch (the faster of
    ``repeats`` batches of ``n_images``; flip averaging included; builds the network if it
    is not built yet). A text featurizer is timed on ``n_images`` sentences of 16 words.

    Measured once per process for a network and runtime (its fingerprint, device,
    precision, jit, batch size and torch's thread count): later calls return that figure
    without running the network again."""
    key = _timing_key(featurizer, n_images, repeats)
    with _timed_lock:
        if key is not None and key in _timed:
            return _timed[key]
    ms = _time_part(featurizer, n_images, repeats)
    if key is not None:
        with _timed_lock:
            ms = _timed.setdefault(key, ms)
    return ms


def _time_part(featurizer: Any, n_images: int, repeats: int) -> float:
    if getattr(featurizer, "modality", "image") == "text":
        texts = [" ".join(["word"] * 16)] * n_images
        featurizer.embed_texts(texts[:1])
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            featurizer.embed_texts(texts)
            best = min(best, time.perf_counter() - t0)
        return 1000.0 * best / n_images
    h, w = featurizer.preprocess.crop
    batch = np.random.default_rng(0).integers(0, 256, (n_images, 3, h, w), dtype=np.uint8)
    featurizer.embed_pixels(batch[:1])  # build and warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        featurizer.embed_pixels(batch)
        best = min(best, time.perf_counter() - t0)
    return 1000.0 * best / n_images


def space_cost(parts: Sequence[Mapping[str, Any]], part_ms: Mapping[str, float | None]) -> dict[str, Any]:
    """``forward_passes`` and ``ms_per_image`` (``None`` unless every part was timed) of a
    space, from its parts and ``part_ms`` (part name -> ms per image)."""
    from deepfeat.classify.spaces import space_name

    ms = [part_ms.get(space_name(p)) for p in parts]
    return {
        "forward_passes": forward_passes(parts),
        "ms_per_image": None if any(m is None for m in ms) else round(float(sum(ms)), 2),
    }


def bounded(
    specs: Sequence[Sequence[Mapping[str, Any]]],
    max_cost: int | None,
    max_ms_per_image: float | None = None,
    part_ms: Mapping[str, float | None] | None = None,
) -> tuple[list[Any], list[dict[str, Any]]]:
    """The candidate spaces within the bounds, and a row for each one left out.

    Raises
    ------
    InvalidParameterError
        No candidate is within the bounds (the message gives the cheapest one's cost).
    """
    from deepfeat.classify.spaces import space_name
    from deepfeat.exceptions import InvalidParameterError

    kept, out = [], []
    for s in specs:
        c = space_cost(s, part_ms or {})
        if max_cost is not None and c["forward_passes"] > max_cost:
            out.append({"space": space_name(s), **c,
                        "status": f"skipped: {c['forward_passes']} forward passes > max_cost={max_cost}"})
        elif max_ms_per_image is not None and (c["ms_per_image"] or 0.0) > max_ms_per_image:
            out.append({"space": space_name(s), **c,
                        "status": f"skipped: {c['ms_per_image']:.1f} ms per image > "
                                  f"max_ms_per_image={max_ms_per_image:g}"})
        else:
            kept.append(s)
    if not kept:
        cheapest = min(out, key=lambda r: (r["forward_passes"], r["ms_per_image"] or 0.0))
        raise InvalidParameterError(
            f"no candidate space within max_cost={max_cost} / max_ms_per_image={max_ms_per_image}: the "
            f"cheapest, {cheapest['space']}, takes {cheapest['forward_passes']} forward pass(es) and "
            f"{cheapest['ms_per_image']} ms per image here; raise the bound"
        )
    return kept, out


def machine() -> str:
    """Where ms per image were measured: processor model and core count."""
    import os

    name = ""
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()}, {os.cpu_count()} cores"
