"""Decoded, resized training images held in memory as uint8, and the augmentation around them.

Each image is decoded once (EXIF orientation, RGB), its shorter side resized to the
backbone's own ``resize`` length and centre-cropped to a ``resize x resize`` square, then
kept as uint8 (``256 * 256 * 3`` bytes: 250 images are 49 MB), so epochs never re-decode
a JPEG. Batches are cut from it: a random resized crop and flip when training, the
backbone's centre crop when evaluating; normalisation uses the backbone's own mean/std.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from deepfeat.featurize.decode import DEFAULT_MAX_PIXELS, decode_image
from deepfeat.featurize.preprocess import Preprocess
from deepfeat.featurize.runtime import cpu_count

__all__ = ["PixelBank", "load_pixels"]

#: Smallest area share of the random resized crop (timm's default 0.08 is made for
#: ImageNet-scale training; with a few hundred images a milder crop keeps the object).
CROP_SCALE = (0.35, 1.0)


@dataclasses.dataclass
class PixelBank:
    """uint8 ``(N, 3, S, S)`` images and the preprocessing that turns them into model input."""

    pixels: torch.Tensor
    preprocess: Preprocess

    def __len__(self) -> int:
        return len(self.pixels)

    def _interp(self) -> InterpolationMode:
        name = self.preprocess.interpolation
        return InterpolationMode.BICUBIC if name == "bicubic" else InterpolationMode.BILINEAR

    def train_batch(self, idx: Sequence[int], augment: bool) -> torch.Tensor:
        """Augmented uint8 batch (uses the global torch RNG: seed it for reproducibility)."""
        if not augment:
            return self.eval_batch(idx)
        tf = T.Compose([
            T.RandomResizedCrop(self.preprocess.crop, scale=CROP_SCALE, interpolation=self._interp(), antialias=True),
            T.RandomHorizontalFlip(),
        ])
        return torch.stack([tf(self.pixels[i]) for i in idx])

    def eval_batch(self, idx: Sequence[int]) -> torch.Tensor:
        """The backbone's centre crop of the stored squares (uint8)."""
        ch, cw = self.preprocess.crop
        s = self.pixels.shape[-1]
        top, left = (s - ch) // 2, (s - cw) // 2
        return self.pixels[list(idx), :, top : top + ch, left : left + cw]

    def subset(self, idx: Sequence[int]) -> PixelBank:
        """The images at ``idx`` (a view-free copy), same preprocessing."""
        return PixelBank(self.pixels[list(idx)], self.preprocess)

    def normalize(self, batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
        x = self.preprocess.normalize(batch.to(device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def load_pixels(items: Sequence[Any], preprocess: Preprocess, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> PixelBank:
    """Decode and resize ``items`` (paths, PIL images or arrays) into a :class:`PixelBank`.

    Raises
    ------
    ImageDecodeError
        For the first image that cannot be decoded (callers pass only readable images).
    """
    side = max(preprocess.resize, *preprocess.crop)
    square = dataclasses.replace(preprocess, resize=side, crop=(side, side))

    def one(item: Any) -> torch.Tensor:
        return square.geometry(decode_image(item, draft_size=side, max_pixels=max_pixels))

    with ThreadPoolExecutor(max_workers=max(1, cpu_count())) as ex:  # Pillow releases the GIL
        tensors = list(ex.map(one, items))
    return PixelBank(torch.stack(tensors) if tensors else torch.zeros(0, 3, side, side, dtype=torch.uint8), preprocess)


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)``: ``fraction`` of each class (at least one image) held out.

    A class with fewer than two images stays wholly in training; ``fraction=0`` or a
    split that would leave no validation image returns an empty ``val``.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = 0 if fraction <= 0 or len(idx) < 2 else max(1, int(round(fraction * len(idx))))
        n_val = min(n_val, len(idx) - 1)
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return np.sort(np.asarray(train, dtype=int)), np.sort(np.asarray(val, dtype=int))
