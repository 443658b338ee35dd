"""Built-in real data for the demo, exported as ordinary class folders of PNG files.

* ``lfw_subset`` -- scikit-image's 200 grey 25×25 crops from Labeled Faces in the Wild:
  100 faces and 100 non-faces cut from the photos' backgrounds (classes ``face`` and
  ``not_face``).
* ``digits`` -- scikit-learn's 8×8 handwritten digits (classes ``0`` … ``9``), a fixed-seed
  subset of ``per_class`` images per class, written dark-on-light and enlarged ×4 with
  nearest-neighbour so the files stay faithful to the 64 original pixels.

The folders are what ``deepfeat experiment`` reads, so the demo runs the very same path as
a user's own data. Exports are idempotent: a complete folder is left as it is.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DEMO_DATASETS", "export_lfw_subset", "export_digits", "export_demo_data"]

log = logging.getLogger(__name__)

DEMO_DATASETS = ("lfw_subset", "digits")


def _complete(folder: Path, expected: int) -> bool:
    return folder.is_dir() and sum(1 for _ in folder.glob("*/*.png")) == expected


def _write(images: np.ndarray, labels: list[str], folder: Path, scale: int = 1) -> None:
    for idx, (img, label) in enumerate(zip(images, labels, strict=True)):
        d = folder / label
        d.mkdir(parents=True, exist_ok=True)
        pil = Image.fromarray(img)  # uint8 HxW: mode L
        if scale > 1:
            pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
        pil.save(d / f"{label}_{idx:04d}.png")


def export_lfw_subset(root: str | os.PathLike = "data") -> Path:
    """Write scikit-image's ``lfw_subset`` to ``root/lfw_subset/{face,not_face}/*.png``.

    Needs scikit-image (``pip install deepfeat[demo]``).
    """
    try:
        from skimage.data import lfw_subset
    except ImportError:
        raise ImportError("the demo data needs scikit-image: pip install deepfeat[demo]") from None
    folder = Path(root) / "lfw_subset"
    if _complete(folder, 200):
        return folder
    from skimage.util import img_as_ubyte

    arr = img_as_ubyte(lfw_subset())  # (200, 25, 25); the first 100 are faces
    labels = ["face"] * 100 + ["not_face"] * 100
    _write(arr, labels, folder)
    log.info("exported lfw_subset (200 images) to %s", folder)
    return folder


def export_digits(root: str | os.PathLike = "data", per_class: int = 50, seed: int = 0) -> Path:
    """Write ``per_class`` scikit-learn digits per class to ``root/digits/<digit>/*.png``.

    Examples
    --------
    >>> import tempfile
    >>> d = export_digits(tempfile.mkdtemp(), per_class=2)
    >>> len(list(d.glob("*/*.png")))
    20
    """
    from sklearn.datasets import load_digits

    folder = Path(root) / "digits"
    if _complete(folder, 10 * per_class):
        return folder
    if folder.is_dir() and any(folder.iterdir()):
        raise FileExistsError(
            f"{folder} holds a different digits export; remove it to export {per_class} per class"
        )
    digits = load_digits()
    rng = np.random.default_rng(seed)
    keep = np.sort(
        np.concatenate(
            [rng.permutation(np.flatnonzero(digits.target == c))[:per_class] for c in range(10)]
        )
    )
    # Values 0..16, ink high: write dark ink on a light background, as digits are seen.
    arr = (255 - np.round(digits.images[keep] * 255 / 16)).astype(np.uint8)
    _write(arr, [str(t) for t in digits.target[keep]], folder, scale=4)
    log.info("exported %d digits to %s", len(keep), folder)
    return folder


def export_demo_data(
    root: str | os.PathLike = "data", *, digits_per_class: int = 50
) -> dict[str, Path]:
    """Export both demo datasets under ``root``; return ``{name: folder}``."""
    return {
        "lfw_subset": export_lfw_subset(root),
        "digits": export_digits(root, per_class=digits_per_class),
    }
