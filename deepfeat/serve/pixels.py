"""Backbone geometry (resize the shorter side, centre-crop) in numpy and Pillow only.

``deepfeat serve --runtime onnx`` must not import torch, so it cannot call
:meth:`deepfeat.featurize.preprocess.Preprocess.geometry` (which resizes with torch's
antialiased kernels for speed). This is the same geometry -- the same output size, crop
box and interpolation -- resampled by Pillow, whose filter taps torch's antialiased
kernels reproduce: on real photos pixel values differ by at most one level and class
probabilities by under 1e-3 (tests/test_export_onnx.py measures both).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from deepfeat.featurize.interpolation import PIL_INTERPOLATION as _PIL_INTERPOLATION

__all__ = ["resized_size", "to_model_input"]



def resized_size(w: int, h: int, resize: int, crop: tuple[int, int]) -> tuple[int, int]:
    """Size ``(nw, nh)`` of an image ``w x h`` after deepfeat's resize, before the crop.

    Examples
    --------
    >>> resized_size(640, 480, 256, (224, 224))
    (341, 256)
    """
    scale = resize / min(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    ch, cw = crop
    if nw < cw or nh < ch:  # narrower than the crop after resizing: scaled up to cover it
        up = max(cw / nw, ch / nh)
        nw, nh = math.ceil(nw * up), math.ceil(nh * up)
    return nw, nh


def to_model_input(img: Image.Image, preprocess: Mapping[str, Any]) -> np.ndarray:
    """An RGB image as the uint8 ``(3, H, W)`` crop a deepfeat backbone (or ONNX file) takes.

    Parameters
    ----------
    img : PIL.Image.Image
        RGB, as :func:`deepfeat.featurize.decode.decode_image` returns it.
    preprocess : mapping
        ``resize``, ``crop`` (height, width) and ``interpolation``, as in
        :meth:`Preprocess.to_dict <deepfeat.featurize.preprocess.Preprocess.to_dict>`.

    Examples
    --------
    >>> p = {"resize": 256, "crop": [224, 224], "interpolation": "bicubic"}
    >>> to_model_input(Image.new("RGB", (640, 480)), p).shape
    (3, 224, 224)
    """
    w, h = img.size
    ch, cw = int(preprocess["crop"][0]), int(preprocess["crop"][1])
    if preprocess.get("crop_mode", "center") == "squash":  # both sides to resize (timm)
        nw = nh = int(preprocess["resize"])
        if nw < max(ch, cw):
            nw = nh = max(ch, cw)
    else:
        nw, nh = resized_size(w, h, int(preprocess["resize"]), (ch, cw))
    left, top = (nw - cw) // 2, (nh - ch) // 2
    if (nw, nh) != (w, h):
        # resample only the crop window: the same filter taps as resizing the whole image
        sx, sy = w / nw, h / nh
        box = (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)
        out = img.resize(
            (cw, ch), _PIL_INTERPOLATION[preprocess["interpolation"]], box=box, reducing_gap=None
        )
    else:
        out = img.crop((left, top, left + cw, top + ch))
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1))
