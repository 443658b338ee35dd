"""Pillow's resampling filters by the names deepfeat's preprocessing uses.

Its own module, free of torch, so that the onnxruntime server (``deepfeat.serve.pixels``)
resizes with the same table as :class:`~deepfeat.featurize.preprocess.Preprocess`.
"""

from __future__ import annotations

from PIL import Image

__all__ = ["PIL_INTERPOLATION"]

PIL_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
