"""Where images come from: class folders, CSV/parquet manifests, lists of paths.

Folders are walked in sorted order. Hidden files (``.DS_Store``...) are ignored. A file
with an image extension is always kept (if it is broken, decoding records why); a file
without one is sniffed, kept when it really is an image (e.g. a JPEG saved without an
extension) and otherwise listed in ``skipped`` with the reason (``Thumbs.db``, notes).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepfeat.exceptions import InputError
from deepfeat.featurize.decode import sniff_is_image

__all__ = ["IMAGE_EXTENSIONS", "LabeledInputs", "load_labeled", "collect_images", "scan_images"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .gif .bmp .dib .tif .tiff .webp .ppm .pgm .pbm .pnm .ico .tga .jp2 .j2k .qoi".split()
)
_MANIFEST_EXT = {".csv", ".tsv", ".parquet", ".pq"}


@dataclass
class LabeledInputs:
    """Labelled images found in a source.

    Attributes
    ----------
    paths : list of str
    labels : list of str
    classes : list of str
        Sorted class names.
    skipped : list of dict
        ``{"path", "reason"}`` for files that were not taken as images.
    source : str
    """

    paths: list[str]
    labels: list[str]
    classes: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.paths)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _classify_file(path: str) -> str | None:
    """None when ``path`` should be featurized, else the reason to skip it."""
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return None
    if os.path.isfile(path) and sniff_is_image(path):
        return None
    return f"not an image file ({ext or 'no extension'})"


def _walk(root: str, skipped: list[dict[str, str]]) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            if _is_hidden(name):
                continue
            path = os.path.join(dirpath, name)
            reason = _classify_file(path)
            if reason is None:
                found.append(path)
            else:
                skipped.append({"path": path, "reason": reason})
        # a directory that merely *looks* like an image (x.jpg/) is walked, not featurized
    return found


def scan_images(src: str | os.PathLike | list[Any]) -> tuple[list[str], list[dict[str, str]]]:
    """Find image paths from a folder (recursively), one image file, or a text listing.

    Parameters
    ----------
    src : path or list of paths
        A folder, an image file, a ``.txt`` file with one path per line (relative paths
        are resolved against the listing's folder), or a list of paths (kept as given).

    Returns
    -------
    paths : list of str
    skipped : list of dict
        ``{"path", "reason"}`` for non-image files found while walking folders.
    """
    if isinstance(src, (list, tuple)):
        return [os.fspath(p) for p in src], []
    src = os.fspath(src)
    skipped: list[dict[str, str]] = []
    if os.path.isdir(src):
        return _walk(src, skipped), skipped
    if not os.path.lexists(src):
        raise InputError(f"{src}: no such file or folder")
    if src.lower().endswith(".txt") and not sniff_is_image(src):
        base = os.path.dirname(os.path.abspath(src))
        with open(src, encoding="utf-8", errors="surrogateescape") as fh:
            lines = [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]
        return [ln if os.path.isabs(ln) else os.path.join(base, ln) for ln in lines], []
    if src.lower().endswith(tuple(_MANIFEST_EXT)):
        ds = load_labeled(src)
        return ds.paths, ds.skipped
    return [src], []


def collect_images(src: str | os.PathLike | list[Any]) -> list[str]:
    """Image paths of ``src`` (see :func:`scan_images`), without the skipped-file list."""
    return scan_images(src)[0]


def load_labeled(
    src: str | os.PathLike,
    *,
    path_col: str = "path",
    label_col: str = "label",
) -> LabeledInputs:
    """Load labelled images from a folder of class subfolders or a CSV/parquet manifest.

    Parameters
    ----------
    src : path
        A folder whose subfolders are the classes (images may be nested deeper), or a
        ``.csv``/``.tsv``/``.parquet`` file with a path and a label column. Relative
        paths in a manifest are resolved against the manifest's folder.
    path_col, label_col : str
        Column names in a manifest.

    Returns
    -------
    LabeledInputs

    Raises
    ------
    InputError
        No such source, no class folders, a missing column, empty labels, or the same
        path given two different labels.

    Notes
    -----
    Files directly inside the root folder (not in a class folder) are listed in
    ``skipped``. A manifest row repeated with the same label is kept once (recorded in
    ``skipped`` as a duplicate row).
    """
    src = os.fspath(src)
    if not os.path.exists(src):
        raise InputError(f"{src}: no such file or folder")
    if os.path.isdir(src):
        return _from_folder(src)
    if Path(src).suffix.lower() in _MANIFEST_EXT:
        return _from_manifest(src, path_col, label_col)
    raise InputError(
        f"{src}: expected a folder of class subfolders or a .csv/.parquet manifest with "
        f"'{path_col}' and '{label_col}' columns"
    )


def _from_folder(root: str) -> LabeledInputs:
    skipped: list[dict[str, str]] = []
    paths: list[str] = []
    labels: list[str] = []
    entries = sorted(os.listdir(root))
    classes = []
    for name in entries:
        full = os.path.join(root, name)
        if _is_hidden(name):
            continue
        if os.path.isdir(full):
            files = _walk(full, skipped)
            if not files:
                log.warning("%s: class folder holds no images; ignored", full)
                skipped.append({"path": full, "reason": "class folder holds no images"})
                continue
            classes.append(name)
            paths.extend(files)
            labels.extend([name] * len(files))
        else:
            skipped.append({"path": full, "reason": "file outside the class folders"})
    if not classes:
        raise InputError(
            f"{root}: no class subfolders with images found; expected ROOT/<class>/<image files>"
        )
    return LabeledInputs(paths, labels, sorted(classes), skipped, root)


def _from_manifest(path: str, path_col: str, label_col: str) -> LabeledInputs:
    import pandas as pd

    try:
        if path.lower().endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep="\t" if path.lower().endswith(".tsv") else ",", dtype=str,
                             keep_default_na=True)
    except ImportError as exc:
        raise InputError(f"{path}: reading parquet needs pyarrow: pip install 'deepfeat[parquet]'") from exc
    except Exception as exc:  # noqa: BLE001 - pandas raises many parser errors
        raise InputError(f"{path}: cannot read manifest: {exc}") from None
    missing = [c for c in (path_col, label_col) if c not in df.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; columns present: "
            f"{', '.join(map(str, df.columns))}. Use --path-col/--label-col to name them."
        )
    bad_path = df[path_col].isna() | (df[path_col].astype(str).str.strip() == "")
    bad_label = df[label_col].isna() | (df[label_col].astype(str).str.strip() == "")
    for what, mask in (("path", bad_path), ("label", bad_label)):
        if mask.any():
            rows = (df.index[mask] + 2).tolist()[:10]  # +2: header line, 1-based
            raise InputError(f"{path}: empty {what} in line(s) {rows} of the manifest")
    base = os.path.dirname(os.path.abspath(path))
    skipped: list[dict[str, str]] = []
    seen: dict[str, str] = {}
    paths, labels = [], []
    for p, lab in zip(df[path_col].astype(str), df[label_col].astype(str)):
        full = p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))
        if full in seen:
            if seen[full] != lab:
                raise InputError(f"{path}: {p!r} is listed twice with different labels ({seen[full]!r}, {lab!r})")
            skipped.append({"path": full, "reason": "duplicate row in manifest"})
            continue
        seen[full] = lab
        paths.append(full)
        labels.append(lab)
    if not paths:
        raise InputError(f"{path}: the manifest lists no images")
    return LabeledInputs(paths, labels, sorted(set(labels)), skipped, path)
