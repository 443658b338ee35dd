"""The benchmark's images: real photos in class folders, the same files for every contender.

Oxford 17 Flowers (``../shared/datasets/oxford17``) is used when present; otherwise the
benchmark makes re-encoded JPEG variants (random crops, rescaled to a ~500 px short side,
as in the flowers set) of scikit-image's sample photos, so it runs on a fresh clone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["SYNTHETIC_MAX", "BenchImages", "bench_images", "default_datasets_dir", "make_photo_variants"]

log = logging.getLogger(__name__)

_SAMPLE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "coins",
    "moon",
    "page",
    "text",
    "horse",
)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class BenchImages:
    """Image files in class subfolders of ``root`` (ImageFolder layout).

    Attributes
    ----------
    root : pathlib.Path
        Folder with one subfolder per class, holding exactly ``paths``.
    paths : list of str
        The images, in ImageFolder order (sorted by class, then file name).
    labels : ndarray of int
    source : str
        Where the photos come from (for the report).
    """

    root: Path
    paths: list[str]
    labels: np.ndarray
    source: str


def default_datasets_dir() -> Path:
    """``$DEEPFEAT_DATASETS`` or ``../shared/datasets`` beside the repository."""
    env = os.environ.get("DEEPFEAT_DATASETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def _sample_photo(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


def make_photo_variants(
    dst: Path, n: int, *, short_side: int = 500, seed: int = 0, n_classes: int = 10
) -> list[str]:
    """Write ``n`` distinct JPEGs into ``dst/<class>/``: crops of the scikit-image photos.

    Each variant is a random crop (60-95 % of each side) of one sample photo, resized so
    its shorter side is about ``short_side`` and saved at JPEG quality 90.
    """
    rng = np.random.default_rng(seed)
    photos = [_sample_photo(name) for name in _SAMPLE_PHOTOS[:n_classes]]
    out = []
    for i in range(n):
        c = i % len(photos)
        img = photos[c]
        h, w = img.shape[:2]
        fh, fw = rng.uniform(0.6, 0.95, size=2)
        ch, cw = max(8, int(h * fh)), max(8, int(w * fw))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = Image.fromarray(img[y : y + ch, x : x + cw])
        scale = short_side * rng.uniform(0.95, 1.05) / min(ch, cw)
        crop = crop.resize(
            (max(1, round(cw * scale)), max(1, round(ch * scale))), Image.Resampling.BICUBIC
        )
        folder = dst / f"{c:02d}_{_SAMPLE_PHOTOS[c]}"
        folder.mkdir(parents=True, exist_ok=True)
        p = folder / f"v{i:06d}.jpg"
        crop.save(p, quality=90)
        out.append(str(p))
    return out


#: The most images the generated source (scikit-image variants) holds: Oxford 17's 1,360.
SYNTHETIC_MAX = 1360


def _class_files(root: Path) -> list[tuple[str, list[Path]]]:
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    return [
        (d.name, sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS))
        for d in classes
    ]


def bench_images(
    workdir: str | os.PathLike,
    n: int,
    *,
    datasets: str | os.PathLike | None = None,
    synthetic: bool = False,
) -> BenchImages:
    """Return ``n`` real photos spread evenly over the classes, linked into ``workdir``.

    Parameters
    ----------
    workdir : path
        Scratch folder; ``workdir/images-<n>`` receives symbolic links (or the generated
        JPEGs when no dataset is available).
    n : int
        Number of images (capped at the dataset's size, or at :data:`SYNTHETIC_MAX` for the
        generated images).
    datasets : path, optional
        Folder holding ``oxford17``; defaults to :func:`default_datasets_dir`.
    synthetic : bool, default=False
        Use the generated scikit-image variants even when Oxford 17 is present.
    """
    workdir = Path(workdir)
    src = Path(datasets) if datasets else default_datasets_dir()
    flowers = src / "oxford17"
    if not synthetic and flowers.is_dir():
        per_class = _class_files(flowers)
        total = sum(len(f) for _, f in per_class)
        n = min(n, total)
        # round-robin over classes so any n covers every class evenly
        picked: list[tuple[str, Path]] = []
        depth = 0
        while len(picked) < n:
            for name, files in per_class:
                if depth < len(files) and len(picked) < n:
                    picked.append((name, files[depth]))
            depth += 1
        root = workdir / f"oxford17-{n}"
        for name, f in picked:
            link = root / name / f.name
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(f.resolve(), link)
        source = f"Oxford 17 Flowers ({flowers}), {n} photos, ~500 px short side"
    else:
        # asking for more than a source holds means all of it; the generated source holds as
        # many as Oxford 17, not the 10**9 the suite asks for when it wants every photo
        n = min(n, SYNTHETIC_MAX)
        root = workdir / f"skimage-variants-{n}"
        if not root.is_dir() or sum(1 for _ in root.rglob("*.jpg")) != n:
            make_photo_variants(root, n)
        source = f"{n} re-encoded JPEG variants of scikit-image sample photos, ~500 px short side"
    per_class = _class_files(root)
    paths = [str(f) for _, files in per_class for f in files]
    labels = np.concatenate([np.full(len(files), i) for i, (_, files) in enumerate(per_class)])
    log.info("benchmark images: %s", source)
    return BenchImages(root, paths, labels.astype(int), source)
