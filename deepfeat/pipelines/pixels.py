"""The raw-pixel baseline's features: each image shrunk to a small RGB square and flattened.

No network is involved, so this is what the head can learn from the pixels alone; a
pretrained backbone has to beat it to count as useful transfer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from deepfeat.exceptions import ImageDecodeError
from deepfeat.featurize.decode import decode_image

__all__ = ["PIXEL_SIZE", "pixel_features"]

log = logging.getLogger(__name__)

#: Side of the square the raw-pixel baseline resizes every image to.
PIXEL_SIZE = 32


def pixel_features(
    inputs: Sequence[Any], size: int = PIXEL_SIZE, *, progress: bool = False
) -> np.ndarray:
    """Return ``(n, size*size*3)`` float32 pixels in [0, 1]; NaN rows for undecodable images.

    Images are resized (not cropped) to ``size x size`` with area averaging.

    Examples
    --------
    >>> pixel_features([np.zeros((10, 20), dtype=np.uint8)], size=4).shape
    (1, 48)
    """
    from tqdm.auto import tqdm

    out = np.full((len(inputs), size * size * 3), np.nan, dtype=np.float32)
    for idx, item in enumerate(tqdm(inputs, desc="raw pixels", disable=None if progress else True)):
        try:
            img = decode_image(item, draft_size=size)
        except ImageDecodeError as exc:
            log.debug("raw pixels: %s", exc)
            continue
        small = img.resize((size, size), Image.Resampling.BOX)
        out[idx] = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
    return out
