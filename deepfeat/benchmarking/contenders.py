"""The four ways of turning the same images into the same embeddings, each timed alone.

1. ``ceiling`` -- forward passes only, on input tensors made beforehand, with the exact
   model object, layout, precision and batch size deepfeat uses: the fastest deepfeat
   could possibly be on this machine.
2. ``deepfeat`` -- :meth:`Featurizer.featurize` end to end: hash, decode, resize, forward,
   write every row to a fresh HDF5 cache, return the aligned matrix.
3. ``naive`` -- the loop of popular snippets: ``PIL.Image.open`` each file, a torchvision
   transform, one image per forward pass, fp32, default (NCHW) layout, ``torch.no_grad``.
4. ``tutorial`` -- torchvision's ``ImageFolder`` + ``DataLoader`` (batch 32, the PyTorch
   transfer-learning tutorial's ``num_workers=4`` capped at the core count), fp32,
   default layout, ``torch.no_grad``.

Naive and tutorial run the unmodified network the backbone builds (no batch-norm folding),
with the backbone's own preprocessing expressed as torchvision transforms; every contender
returns an ``(n, dim)`` float32 matrix, compared afterwards to deepfeat's.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepfeat.featurize import Featurizer
from deepfeat.featurize.decode import decode_image
from deepfeat.featurize.local_batches import n_streams
from deepfeat.featurize.runtime import cpu_count
from deepfeat.featurize.truncate import truncate
from deepfeat.process_state import keeping_signal_handler

__all__ = ["Contender", "make_contenders", "TUTORIAL_BATCH", "tutorial_workers"]

TUTORIAL_BATCH = 32


@dataclass
class Contender:
    """A named, repeatable timed run: ``run()`` returns ``(embeddings, seconds)``."""

    name: str
    description: str
    run: Callable[[], tuple[np.ndarray, float]]


def tutorial_workers() -> int:
    """The tutorial's ``num_workers=4``, capped at the cores this process may use."""
    return max(1, min(4, cpu_count()))


def _torchvision_transform(f: Featurizer):
    from torchvision import transforms

    p = f.preprocess
    modes = {
        "bicubic": transforms.InterpolationMode.BICUBIC,
        "bilinear": transforms.InterpolationMode.BILINEAR,
        "nearest": transforms.InterpolationMode.NEAREST,
        "lanczos": transforms.InterpolationMode.LANCZOS,
        "box": transforms.InterpolationMode.BOX,
        "hamming": transforms.InterpolationMode.HAMMING,
    }
    return transforms.Compose(
        [
            transforms.Resize(p.resize, interpolation=modes[p.interpolation]),
            transforms.CenterCrop(p.crop),
            transforms.ToTensor(),
            transforms.Normalize(p.mean, p.std),
        ]
    )


def plain_network(f: Featurizer) -> torch.nn.Module:
    """The truncated backbone as a snippet would have it: eval mode, fp32, NCHW, CPU/device."""
    rb = f.resolved
    return truncate(rb.build(), f.layer, f.pool, rb.family).eval().to(f.runtime.device)


def premade_batches(f: Featurizer, paths: list[str]) -> list[torch.Tensor]:
    """Decode and preprocess ``paths`` once, into model-ready batches (the ceiling's input)."""
    p = f.preprocess
    out = []
    for s in range(0, len(paths), f.batch_size):
        chunk = [
            p.geometry(decode_image(x, draft_size=p.draft_size))
            for x in paths[s : s + f.batch_size]
        ]
        u8 = torch.stack([t.permute(1, 2, 0) for t in chunk]).permute(0, 3, 1, 2)
        out.append(f.encoder.model_input(u8))
    return out


def _fresh(path: Path) -> None:
    for suffix in ("", ".journal", ".lock"):
        q = Path(str(path) + suffix)
        if q.exists():
            q.unlink()
    for tmp in path.parent.glob(path.name + ".tmp-*"):
        tmp.unlink()


def make_contenders(f: Featurizer, paths: list[str], root: Path, workdir: Path) -> list[Contender]:
    """Build the four contenders for one backbone on one image set.

    ``f`` must be a warmed-up featurizer (its network built) with a cache file under
    ``workdir``; ``root`` is the ImageFolder root holding exactly ``paths``.
    """
    from torchvision import datasets

    dev = f.runtime.device
    tf = _torchvision_transform(f)
    plain = plain_network(f)
    premade = premade_batches(f, paths)
    f.model  # noqa: B018 - built before any timing
    cache_path = Path(f.cache_path)

    streams = n_streams(f.encoder, -(-len(paths) // f.batch_size), f.num_workers)

    def forward_all(threads: int, parallel: int) -> tuple[np.ndarray, float]:
        """Forward every pre-made batch: ``parallel`` threads, ``threads`` intra-op threads."""
        before = torch.get_num_threads()
        torch.set_num_threads(threads)

        def one(x: torch.Tensor) -> torch.Tensor:
            return f.encoder.infer(x)

        try:
            t0 = time.perf_counter()
            if parallel > 1:
                with ThreadPoolExecutor(parallel) as ex:
                    outs = list(ex.map(one, premade))
            else:
                outs = [one(x) for x in premade]
            sec = time.perf_counter() - t0
        finally:
            torch.set_num_threads(before)
        return torch.cat(outs).numpy(), sec

    def ceiling() -> tuple[np.ndarray, float]:
        # The best of deepfeat's two ways to use the cores: its CPU streams (one
        # single-threaded forward per core, in parallel) and intra-op threads on one batch
        # at a time (what it does on a GPU or with explicit workers).
        a = forward_all(1, streams) if streams else None
        b = forward_all(torch.get_num_threads(), 1)
        return b if a is None or b[1] < a[1] else a

    def end_to_end() -> tuple[np.ndarray, float]:
        _fresh(cache_path)
        f.cache.refresh()
        t0 = time.perf_counter()
        res = f.featurize(paths)
        sec = time.perf_counter() - t0
        if res.summary["featurized"] != len(paths):
            raise RuntimeError(
                f"deepfeat featurized {res.summary['featurized']} of {len(paths)} images"
            )
        return res.features, sec

    def naive() -> tuple[np.ndarray, float]:
        from PIL import Image

        outs = []
        t0 = time.perf_counter()
        with torch.no_grad():
            for path in paths:
                img = Image.open(path).convert("RGB")
                x = tf(img).unsqueeze(0).to(dev)
                outs.append(plain(x).cpu())
        sec = time.perf_counter() - t0
        return torch.cat(outs).numpy(), sec

    n_workers = tutorial_workers()

    def tutorial() -> tuple[np.ndarray, float]:
        outs = []
        t0 = time.perf_counter()
        ds = datasets.ImageFolder(str(root), transform=tf)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=TUTORIAL_BATCH, shuffle=False, num_workers=n_workers,
            generator=torch.Generator().manual_seed(0),  # not torch's global one
        )
        with torch.no_grad(), keeping_signal_handler("SIGCHLD"):
            for x, _y in loader:
                outs.append(plain(x.to(dev)).cpu())
        sec = time.perf_counter() - t0
        return torch.cat(outs).numpy(), sec

    return [
        Contender(
            "ceiling",
            "model only: forward on pre-made input tensors, deepfeat's model, layout, "
            "precision, batch; best of per-core streams and intra-op threads",
            ceiling,
        ),
        Contender(
            "deepfeat",
            "Featurizer.featurize end to end: hash, decode, resize, forward, HDF5 cache",
            end_to_end,
        ),
        Contender(
            "naive", "PIL open + torchvision transform + one image per forward, fp32, NCHW", naive
        ),
        Contender(
            "tutorial",
            f"ImageFolder + DataLoader(batch {TUTORIAL_BATCH}, {n_workers} workers), fp32, NCHW",
            tutorial,
        ),
    ]


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def files_in(root: Path) -> int:
    return sum(len(fs) for _, _, fs in os.walk(root))
