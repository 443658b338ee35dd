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

from deepfeat.exceptions import UnsupportedPreprocessingError
from deepfeat.featurize.interpolation import PIL_INTERPOLATION as _PIL_INTERPOLATION

__all__ = ["Preprocess", "CROP_MODES", "input_groups"]

#: ``center``: resize the shorter side to ``resize`` keeping the aspect ratio, then a centre
#: crop; ``squash`` (timm): resize both sides to ``resize``, ignoring the aspect ratio, then
#: a centre crop. timm's ``border`` (fit inside, then pad) is refused by name.
CROP_MODES = ("center", "squash")



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
    crop_mode : str
        One of :data:`CROP_MODES` (``center`` by default; square crops only for ``squash``).

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
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        if self.interpolation not in _PIL_INTERPOLATION:
            raise ValueError(
                f"interpolation must be one of {sorted(_PIL_INTERPOLATION)}, got {self.interpolation!r}"
            )
        if self.crop_mode not in CROP_MODES:
            raise UnsupportedPreprocessingError(
                f"crop_mode must be one of {CROP_MODES}, got {self.crop_mode!r}"
            )
        if self.crop_mode == "squash" and self.crop[0] != self.crop[1]:
            raise UnsupportedPreprocessingError(
                f"crop_mode='squash' is supported for square crops only, got crop={tuple(self.crop)}"
            )

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def from_timm_config(cls, cfg: dict[str, Any]) -> Preprocess:
        """Build from a timm data config (``timm.data.resolve_data_config``)."""
        _, h, w = cfg["input_size"]
        crop_pct = float(cfg.get("crop_pct") or 0.875)
        mode = str(cfg.get("crop_mode") or "center")
        if mode not in CROP_MODES:
            raise UnsupportedPreprocessingError(
                f"timm crop_mode {mode!r} is not supported (supported: {', '.join(CROP_MODES)}); "
                "this model's pretrained config asks for it, so its features would not match timm's"
            )
        resize = int(math.floor(min(h, w) / crop_pct))
        return cls(
            resize=resize,
            crop=(int(h), int(w)),
            interpolation=str(cfg.get("interpolation", "bilinear")),
            mean=tuple(float(x) for x in cfg["mean"]),
            std=tuple(float(x) for x in cfg["std"]),
            crop_mode=mode,
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
            crop_mode=str(d.get("crop_mode", "center")),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop"] = list(self.crop)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        if self.crop_mode == "center":
            # the default is left out, so every space made before crop modes existed keeps
            # its fingerprint
            del d["crop_mode"]
        return d

    # -- application ------------------------------------------------------------------
    @property
    def draft_size(self) -> int:
        """Smallest shorter side the decoder must deliver (for JPEG draft decoding)."""
        return max(self.resize, *self.crop)

    def geometry(self, img: Image.Image | torch.Tensor) -> torch.Tensor:
        """Resize the shorter side and centre-crop; return a uint8 ``(3, H, W)`` tensor.

        ``img`` is an RGB ``PIL.Image`` or a uint8 ``(H, W, 3)`` tensor
        (:func:`~deepfeat.featurize.decode.decode_pixels`).
        """
        is_tensor = isinstance(img, torch.Tensor)
        h, w = (int(img.shape[0]), int(img.shape[1])) if is_tensor else (img.size[1], img.size[0])
        if self.crop_mode == "squash":
            nw = nh = self.resize
        else:
            scale = self.resize / min(w, h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        ch, cw = self.crop
        # An image narrower than the crop after resizing is scaled up to cover it.
        if nw < cw or nh < ch:
            up = max(cw / nw, ch / nh)
            nw, nh = math.ceil(nw * up), math.ceil(nh * up)
        left, top = (nw - cw) // 2, (nh - ch) // 2
        if (nw, nh) != (w, h) and self.interpolation in _TORCH_ANTIALIAS and (is_tensor or img.mode == "RGB"):
            # PyTorch's vectorised uint8 kernels (antialiased, Pillow's filter taps: pixel
            # values within a few levels of Pillow's, most equal) resize faster than Pillow
            # resamples the crop window alone.
            x = img if is_tensor else torch.from_numpy(np.array(img, dtype=np.uint8))
            return _resize_crop(x.permute(2, 0, 1).unsqueeze(0), (nh, nw), (top, left), (ch, cw),
                                self.interpolation)[0]
        if is_tensor:
            img = Image.fromarray(img.numpy())
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


#: Largest misalignment, in source pixels, accepted between the resampling grid of a
#: cropped source window and that of the whole image (see :func:`_axis_window`).
WINDOW_SHIFT_TOLERANCE = 0.01


def _axis_window(n_src: int, n_out: int, lo: int, c: int) -> tuple[int, int, int]:
    """Source span ``[a, b)`` whose resize at scale ``n_out / n_src`` holds outputs ``lo .. lo+c``.

    Resizing the whole axis maps output ``j`` to source ``(j + 0.5) * s - 0.5`` with
    ``s = n_src / n_out``; resizing ``[a, b)`` at the same scale maps its output ``j - k``
    to ``a + (j - k + 0.5) * s - 0.5``: the grids agree when ``a == k * s``. The largest
    output shift ``k`` whose ``k * s`` lies within :data:`WINDOW_SHIFT_TOLERANCE` of an
    integer ``a`` (and keeps the filter's support, ``2 s`` source pixels for bicubic, plus
    a margin, inside the span) is taken; ``(0, n_src, lo)`` when none is.

    Returns
    -------
    a, b : int
        The source span.
    offset : int
        Where output ``lo`` sits in the span's resize (``lo - k``).
    """
    s = n_src / n_out
    support = 2.0 * max(s, 1.0) + 2.0  # bicubic taps reach 2 s (antialiased) plus a margin
    first = lo * s - support
    for k in range(lo, 0, -1):
        a = k * s
        a_int = math.floor(a + 0.5)
        if a_int <= first and abs(a - a_int) <= WINDOW_SHIFT_TOLERANCE:
            b = min(n_src, math.ceil((lo + c) * s + support))
            return a_int, b, lo - k
    return 0, min(n_src, math.ceil((lo + c) * s + support)), lo


def _resize_crop(x: torch.Tensor, size: tuple[int, int], corner: tuple[int, int], crop: tuple[int, int],
                 mode: str) -> torch.Tensor:
    """``interpolate(x, size)[..., top:top+ch, left:left+cw]``, resampling only the window kept.

    Cropping before resizing cuts the resampling work by the share of the image the centre
    crop drops (a third of a 4:3 photo's long side): 0.46 -> 0.32 ms per Oxford 17 photo on
    one core. Pixels agree with resizing the whole image to within a level or two (the grids
    are aligned to :data:`WINDOW_SHIFT_TOLERANCE` of a source pixel; tested).
    """
    (nh, nw), (top, left), (ch, cw) = size, corner, crop
    h, w = int(x.shape[-2]), int(x.shape[-1])
    y0, y1, oy = _axis_window(h, nh, top, ch)
    x0, x1, ox = _axis_window(w, nw, left, cw)
    windowed = (y0, y1, x0, x1) != (0, h, 0, w)
    # torch sizes the output floor(n * scale): the window's must still hold the crop
    if windowed and (math.floor((y1 - y0) * (nh / h)) >= oy + ch and math.floor((x1 - x0) * (nw / w)) >= ox + cw):
        y = torch.nn.functional.interpolate(
            x[:, :, y0:y1, x0:x1], scale_factor=(nh / h, nw / w), recompute_scale_factor=False,
            mode=mode, antialias=True, align_corners=False,
        )
        return y[:, :, oy : oy + ch, ox : ox + cw]
    y = torch.nn.functional.interpolate(x, size=(nh, nw), mode=mode, antialias=True, align_corners=False)
    return y[:, :, top : top + ch, left : left + cw]


def input_groups(preprocesses: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """The distinct input geometries of several networks, and which one each network takes.

    Networks whose crops are made alike (``resize``, ``crop``, ``interpolation`` and
    ``crop_mode``; their ``mean``/``std`` may differ, normalisation is the network's own)
    share one input: a server decodes an image once and makes each distinct crop once.

    Parameters
    ----------
    preprocesses : list of dict
        :meth:`Preprocess.to_dict` of each network.

    Returns
    -------
    inputs : list of dict
        The geometry of each distinct input (the first network's dict of that geometry,
        without ``mean`` and ``std``), in order of first use.
    index : list of int
        For each network, its input's index in ``inputs``.

    Examples
    --------
    >>> a = {"resize": 256, "crop": [224, 224], "interpolation": "bicubic", "mean": [0] * 3, "std": [1] * 3}
    >>> b = dict(a, resize=274, crop=[240, 240])
    >>> inputs, index = input_groups([a, b, dict(a, mean=[0.5] * 3)])
    >>> [i["crop"] for i in inputs], index
    ([[224, 224], [240, 240]], [0, 1, 0])
    """
    inputs: list[dict[str, Any]] = []
    keys: list[tuple] = []
    index = []
    for pre in preprocesses:
        geo = {k: v for k, v in pre.items() if k not in ("mean", "std")}
        key = (int(geo["resize"]), tuple(int(v) for v in geo["crop"]), geo["interpolation"],
               geo.get("crop_mode", "center"))
        if key not in keys:
            keys.append(key)
            inputs.append(geo)
        index.append(keys.index(key))
    return inputs, index
