"""The image reader: path, bytes, PIL image or array -> key, and uint8 pixels at the input size.

The key of an image is the hash of its file bytes (or pixels, in memory). Reading decodes,
resizes and crops to the encoder's input size (its :class:`~deepfeat.featurize.preprocess.Preprocess`);
normalisation is the encoder's. A file that cannot be read, decoded or resized becomes a
reason for that image and the run carries on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image

from deepfeat.exceptions import ImageDecodeError
from deepfeat.featurize.decode import DEFAULT_MAX_PIXELS, decode_pixels, describe_source, read_bytes
from deepfeat.featurize.hashing import hash_array, hash_bytes
from deepfeat.featurize.runtime import cpu_count
from deepfeat.process_state import keeping_signal_handler

__all__ = ["ImageReader", "image_key"]

#: What reading, decoding and resizing one image may raise for a bad *file*: I/O errors
#: (Pillow's ``UnidentifiedImageError`` and lazy-load errors are ``OSError`` too) and
#: Pillow's refusal of a decompression bomb. :func:`decode_image` already turns these
#: into :class:`ImageDecodeError`; they are caught again around the resize, which is the
#: first thing to touch the pixels of a lazily loaded image.
_PER_IMAGE_ERRORS = (OSError, Image.DecompressionBombError)


def image_key(item: Any) -> str:
    """The cache key of an image: a hash of its file bytes, or of its pixels in memory.

    Raises
    ------
    ImageDecodeError
        When the file cannot be read, or the item is no image at all.
    """
    if isinstance(item, (str, os.PathLike)):
        return hash_bytes(read_bytes(item))
    if isinstance(item, np.ndarray):
        return hash_array(item)
    if isinstance(item, Image.Image):
        return hash_array(np.asarray(item), mode=item.mode)
    if isinstance(item, (bytes, bytearray)):
        return hash_bytes(bytes(item))
    raise ImageDecodeError(describe_source(item), "unsupported input type (expected a path, PIL image or array)")


class _DecodeDataset(torch.utils.data.Dataset):
    """Decode + resize + crop one image; a bad file becomes a reason, never an exception.

    Only decode and I/O errors are per-image failures. Anything else (a ``TypeError`` in
    the preprocessing, say) is a bug in deepfeat, not in the image: it propagates and
    stops the run with its traceback rather than marking every image as failed.
    """

    def __init__(self, items: list[Any], preprocess: Any, max_pixels: int) -> None:
        self.items = items
        self.preprocess = preprocess
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        item = self.items[i]
        try:
            img = decode_pixels(item, draft_size=self.preprocess.draft_size, max_pixels=self.max_pixels)
            return i, self.preprocess.geometry(img), ""
        except ImageDecodeError as exc:
            return i, None, exc.reason
        except MemoryError:
            return i, None, "out of memory while decoding"
        except _PER_IMAGE_ERRORS as exc:
            return i, None, f"cannot decode or resize: {type(exc).__name__}: {exc}"


def _collate(batch: list[tuple[int, torch.Tensor | None, str]]) -> tuple[list[int], torch.Tensor | None, list[str]]:
    """``(positions, uint8 (N, 3, H, W) batch of the decodable images or None, reasons)``."""
    good = [b[1] for b in batch if not b[2]]
    # Stack as (N, H, W, C) and view as (N, C, H, W): the channels_last layout the model
    # prefers, with no layout conversion of the float batch later.
    x = torch.stack([t.permute(1, 2, 0) for t in good]).permute(0, 3, 1, 2) if good else None
    return [b[0] for b in batch], x, [b[2] for b in batch]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class ImageSource:
    """The images of one run, read on demand (in this thread, or by DataLoader workers)."""

    sizes = None  # images are batched in input order

    def __init__(self, items: list[Any], preprocess: Any, max_pixels: int) -> None:
        self.dataset = _DecodeDataset(items, preprocess, max_pixels)

    def __len__(self) -> int:
        return len(self.dataset)

    def notes(self) -> dict[str, Any]:
        return {}

    def read(self, group: list[int]) -> tuple[torch.Tensor | None, list[str]]:
        _, x, reasons = _collate([self.dataset[i] for i in group])
        return x, reasons

    def read_batches(self, groups: list[list[int]], workers: int, pin_memory: bool
                     ) -> Iterator[tuple[list[int], torch.Tensor | None, list[str]]]:
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=groups, num_workers=workers,
            collate_fn=_collate, pin_memory=pin_memory,
            worker_init_fn=_worker_init if workers else None,
            prefetch_factor=4 if workers else None, persistent_workers=False,
            multiprocessing_context="fork" if workers and sys.platform.startswith("linux") else None,
            # the worker seeds come from this generator, not from torch's global one (whose
            # state is the caller's)
            generator=torch.Generator().manual_seed(0),
        )
        with keeping_signal_handler("SIGCHLD"):  # torch installs one for its worker processes
            yield from loader


class ImageReader:
    """Keys and pixels of images for the featurizing engine.

    Parameters
    ----------
    preprocess : Preprocess
        The encoder's input recipe (decode draft size, resize, crop).
    max_pixels : int
        Decompression-bomb limit per image.
    """

    unit = "img"
    rate_key = "images_per_second"

    def __init__(self, preprocess: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.preprocess = preprocess
        self.max_pixels = max_pixels

    def check_sequence(self, inputs: Any) -> None:
        if isinstance(inputs, (str, os.PathLike, Image.Image, np.ndarray)) and not (
            isinstance(inputs, np.ndarray) and inputs.dtype == object
        ):
            raise TypeError(
                "featurize() takes a sequence of images; wrap a single image in a list, "
                "and use deepfeat.featurize.inputs.collect_images() for a folder"
            )

    def keys(self, inputs: Sequence[Any]) -> tuple[list[str | None], dict[int, str]]:
        """The key of each input (``None`` where it cannot be read) and the reasons of those."""
        def one(item: Any) -> tuple[str | None, str]:
            try:
                return image_key(item), ""
            except ImageDecodeError as exc:
                return None, exc.reason

        # threads: hashing and file reads release the GIL
        with ThreadPoolExecutor(max_workers=min(8, max(1, cpu_count() * 2))) as ex:
            found = list(ex.map(one, inputs))
        return [k for k, _ in found], {i: r for i, (k, r) in enumerate(found) if k is None}

    def describe(self, item: Any, index: int) -> str:
        return describe_source(item)

    def open(self, items: list[Any]) -> ImageSource:
        return ImageSource(items, self.preprocess, self.max_pixels)

    def ray_items(self, items: list[Any]) -> list[str]:
        if not all(isinstance(x, (str, os.PathLike)) for x in items):
            raise TypeError("engine='ray' takes image file paths (the actors read the files)")
        return [os.fspath(x) for x in items]

    def base_notes(self) -> dict[str, Any]:
        return {}

    def log_notes(self, notes: dict[str, Any]) -> None:
        pass
