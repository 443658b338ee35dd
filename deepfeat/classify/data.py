"""Read a labelled image set (class folders or a manifest) as ``X, y`` for ``fit``."""

from __future__ import annotations

import logging
import os

import numpy as np

from deepfeat.featurize.inputs import load_labeled

__all__ = ["load_xy"]

log = logging.getLogger(__name__)


def load_xy(
    src: str | os.PathLike, *, path_col: str = "path", label_col: str = "label"
) -> tuple[list[str], np.ndarray]:
    """Return image paths and labels from a folder of class subfolders or a manifest.

    Parameters
    ----------
    src : path
        ``ROOT/<class>/<images>`` or a ``.csv``/``.tsv``/``.parquet`` file with a path
        and a label column (see :func:`deepfeat.featurize.inputs.load_labeled`).
    path_col, label_col : str
        Column names in a manifest.

    Returns
    -------
    X : list of str
        Image paths.
    y : ndarray of str
        Their labels.

    Raises
    ------
    InputError
        No such source, no classes, missing columns (the message says which).

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for c in ("cat", "dog"):
    ...     (root / c).mkdir()
    ...     Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / c / "a.png")
    >>> X, y = load_xy(root)
    >>> y.tolist()
    ['cat', 'dog']
    """
    ds = load_labeled(src, path_col=path_col, label_col=label_col)
    for s in ds.skipped:
        log.info("skipped %s: %s", s["path"], s["reason"])
    return list(ds.paths), np.asarray(ds.labels, dtype=str)
