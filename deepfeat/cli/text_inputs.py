"""Texts on the command line: which sources hold texts, and one error when the model reads the other kind.

``fit``, ``predict``, ``evaluate`` and ``experiment`` take texts where they take images:
a CSV/TSV/parquet file with a ``text`` column (``--text-column``), a ``.txt`` file with one
text per line, or a folder of class folders of ``.txt`` files
(:mod:`deepfeat.featurize.text_sources`). A text source is read with the text encoder
``minilm`` unless ``--backbone`` names another one.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from deepfeat.exceptions import InputError, InvalidParameterError
from deepfeat.featurize.backbones import DEFAULT_BACKBONE, backbone_modality
from deepfeat.featurize.text_encoders import DEFAULT_TEXT_BACKBONE
from deepfeat.featurize.text_sources import TextInputs, is_text_source, read_columns, read_texts

__all__ = ["add_text_options", "source_modality", "pick_backbone", "check_model_reads", "read_labeled_texts",
           "source_rows"]


def add_text_options(p: argparse.ArgumentParser) -> None:
    """``--text-column`` (the ``--label-col`` option of the command names the labels)."""
    p.add_argument("--text-column", "--text-col", dest="text_col", default="text",
                   help="text column of a CSV/TSV/parquet source of texts (default: text)")


def source_modality(src: str, text_col: str = "text", path_col: str = "path", prefer: str | None = None) -> str:
    """``"text"`` for a source of texts, else ``"image"``. A manifest with neither column
    counts as ``prefer`` (the modality of the backbone asked for), else as texts, so that the
    error names the column the command needs and the columns found."""
    if is_text_source(src, text_col=text_col):
        return "text"
    if Path(src).suffix.lower() in (".csv", ".tsv", ".parquet", ".pq") and os.path.isfile(src):
        try:
            cols = read_columns(src)
        except InputError:
            return "image"
        if path_col not in cols:
            return prefer or "text"
    return "image"


def pick_backbone(given: str | None, src: str, text_col: str, path_col: str = "path") -> tuple[str, str]:
    """The backbone for ``src`` and the source's modality: ``given``, else the default for
    the source (``minilm`` for texts). A text source given to an image backbone, or
    images to a text encoder, is one :class:`InvalidParameterError`."""
    kind = source_modality(src, text_col, path_col, prefer=None if given is None else backbone_modality(given))
    if given is None:
        return (DEFAULT_TEXT_BACKBONE if kind == "text" else DEFAULT_BACKBONE), kind
    check_reads(backbone_modality(given), kind, src, f"--backbone {given}")
    return given, kind


def check_reads(reads: str, kind: str, src: str, who: str) -> None:
    if reads == kind:
        return
    if kind == "text":
        raise InvalidParameterError(
            f"{src} holds texts, but {who} reads images: use a text encoder such as "
            f"--backbone {DEFAULT_TEXT_BACKBONE} (the default for texts)"
        )
    raise InvalidParameterError(
        f"{src} holds images (no .txt files, no text column), but {who} reads texts: give a CSV with a "
        f"text column (--text-column to name it), a .txt file or class folders of .txt files"
    )


def check_model_reads(model: Any, src: str, text_col: str) -> str:
    """The modality of ``src`` after checking that ``model`` reads it."""
    kind = source_modality(src, text_col)
    reads = model._modality() if hasattr(model, "_modality") else "image"
    spec = getattr(model, "featurizer_spec_", None) or {}
    check_reads(reads, kind, src, f"the model (backbone {spec.get('backbone', '?')})")
    return kind


def read_labeled_texts(src: str, text_col: str, label_col: str) -> TextInputs:
    return read_texts(src, text_col=text_col, label_col=label_col, labeled=True)


def source_rows(ds: TextInputs, failures: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Failures of a featurize run (indexes into ``ds.texts``) named by their source row."""
    return [{"path": ds.rows[f["index"]], "reason": f["reason"]} for f in failures]
