"""Preprocessing that travels with the weights: resize, crop, interpolation, mean, std.

Geometry (resize of the shorter side, keeping the aspect ratio, then a centre crop) runs
on the decoded PIL image in the loader; normalisation runs on the whole uint8 batch on the
model's device, which is cheaper than per-image float work.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["Preprocess"]

_PIL_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


#: Interpolations resized with ``torch.nn.functional.interpolate(..., antialias=True)``
_TORCH_ANTIALIAS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocess:
    """How a backbone expects its input images.

    Parameters
    ----------
    resize : int
        Length the shorter side is resized to (aspect ratio kept).
    crop : tuple of int
        ``(height, width)`` of the centre crop taken after resizing.
    interpolation : str
        One of ``nearest``, ``bilinear``, ``bicubic``, ``lanczos``, ``box``, ``hamming``.
    mean, std : tuple of float
        Per-channel normalisation applied to pixel values scaled to [0, 1].

    Examples
    --------
    >>> p = Preprocess(resize=256, crop=(224, 224), interpolation="bicubic",
    ...                mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> from PIL import Image
    >>> tuple(p.geometry(Image.new("RGB", (640, 480))).shape)
    (3, 224, 224)
    """

    resize: int
    crop: tuple[int, int]
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.interpolation not in _PIL_INTERPOLATION:
            raise ValueError(
                f"interpolation must be one of {sorted(_PIL_INTERPOLATION)}, got {self.interpolation!r}"
            )

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def from_timm_config(cls, cfg: dict[str, Any]) -> Preprocess:
        """Build from a timm data config (``timm.data.resolve_data_config``)."""
        _, h, w = cfg["input_size"]
        crop_pct = float(cfg.get("crop_pct") or 0.875)
        if cfg.get("crop_mode", "center") not in ("center", "squash", "border"):
            raise ValueError(f"unsupported timm crop_mode {cfg.get('crop_mode')!r}")
        resize = int(math.floor(min(h, w) / crop_pct))
        return cls(
            resize=resize,
            crop=(int(h), int(w)),
            interpolation=str(cfg.get("interpolation", "bilinear")),
            mean=tuple(float(x) for x in cfg["mean"]),
            std=tuple(float(x) for x in cfg["std"]),
        )

    @classmethod
    def from_torchvision_transforms(cls, tf: Any) -> Preprocess:
        """Build from a torchvision weights' ``transforms()`` (``ImageClassification``)."""
        crop = tf.crop_size[0] if isinstance(tf.crop_size, (list, tuple)) else tf.crop_size
        resize = tf.resize_size[0] if isinstance(tf.resize_size, (list, tuple)) else tf.resize_size
        interp = getattr(tf.interpolation, "value", str(tf.interpolation)).lower()
        return cls(
            resize=int(resize),
            crop=(int(crop), int(crop)),
            interpolation=interp,
            mean=tuple(float(x) for x in tf.mean),
            std=tuple(float(x) for x in tf.std),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            resize=int(d["resize"]),
            crop=(int(d["crop"][0]), int(d["crop"][1])),
            interpolation=str(d["interpolation"]),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop"] = list(self.crop)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    # -- application ------------------------------------------------------------------
    @property
    def draft_size(self) -> int:
        """Smallest shorter side the decoder must deliver (for JPEG draft decoding)."""
        return max(self.resize, *self.crop)

    def geometry(self, img: Image.Image) -> torch.Tensor:
        """Resize the shorter side and centre-crop; return a uint8 ``(3, H, W)`` tensor."""
        w, h = img.size
        scale = self.resize / min(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        ch, cw = self.crop
        # An image narrower than the crop after resizing is scaled up to cover it.
        if nw < cw or nh < ch:
            up = max(cw / nw, ch / nh)
            nw, nh = math.ceil(nw * up), math.ceil(nh * up)
        left, top = (nw - cw) // 2, (nh - ch) // 2
        if (nw, nh) != (w, h) and self.interpolation in _TORCH_ANTIALIAS and img.mode == "RGB":
            # PyTorch's vectorised uint8 kernels (antialiased, Pillow's filter taps: pixel
            # values within a few levels of Pillow's, most equal) resize the whole image
            # faster than Pillow resamples the crop window alone.
            x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0)
            y = torch.nn.functional.interpolate(
                x, size=(nh, nw), mode=self.interpolation, antialias=True, align_corners=False
            )
            return y[0, :, top : top + ch, left : left + cw]
        if (nw, nh) != (w, h):
            # Resample only the crop window: the same filter taps as resizing the whole image
            # and cropping after (Pillow reads the source pixels around the box), less work.
            sx, sy = w / nw, h / nh
            box = (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)
            img = img.resize((cw, ch), _PIL_INTERPOLATION[self.interpolation], box=box, reducing_gap=None)
        else:
            img = img.crop((left, top, left + cw, top + ch))
        arr = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def normalize(self, batch: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Turn a uint8 ``(N, 3, H, W)`` batch into the normalised float input of the model."""
        # (x / 255 - mean) / std as one multiply-add per pixel
        std = torch.tensor(self.std, dtype=torch.float64)
        scale = (1.0 / (255.0 * std)).to(batch.device, torch.float32).view(1, 3, 1, 1)
        shift = (-torch.tensor(self.mean, dtype=torch.float64) / std).to(batch.device, torch.float32).view(1, 3, 1, 1)
        x = torch.addcmul(shift, batch.to(torch.float32), scale)
        return x.to(dtype)
