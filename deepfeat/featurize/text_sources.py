"""Where texts come from: CSV/TSV/parquet manifests, ``.txt`` files, folders of class folders.

* A manifest (``.csv``, ``.tsv``, ``.parquet``) with a ``text`` column, and a ``label``
  column for labelled data (other names through ``text_col`` / ``label_col``).
* A ``.txt`` file: one text per line (unlabelled; for ``predict``).
* A folder of class subfolders holding ``.txt`` files: each file is one text of its
  folder's class.

Bad rows never stop a read: each is listed in ``failed`` with its row (or file) and the
reason (empty or whitespace-only text, bytes that are not UTF-8, an empty label), and the
rest carry on. What cannot be read at all (no such file, a missing column) raises one
:class:`~deepfeat.exceptions.InputError` line naming the file and, for a column, the
columns found.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepfeat.exceptions import InputError
from deepfeat.featurize.text_reader import ENCODING, text_problem

__all__ = ["TEXT_EXTENSIONS", "TextInputs", "is_text_source", "read_columns", "read_texts", "ENCODING"]

TEXT_EXTENSIONS = frozenset({".txt", ".text"})
_MANIFEST = {".csv", ".tsv", ".parquet", ".pq"}


@dataclass
class TextInputs:
    """Texts found in a source.

    Attributes
    ----------
    texts : list of str
        The readable texts, in source order.
    labels : list of str or None
        Their labels (``None`` for an unlabelled source).
    rows : list of str
        Where each text is: ``"line N"`` of a manifest or ``.txt`` file, or a file path.
    failed : list of dict
        ``{"row", "reason"}`` of each row that was not taken.
    duplicates : int
        Texts that appear more than once (kept: each occurrence is a sample; the cache
        encodes each distinct text once).
    source : str
    """

    texts: list[str]
    labels: list[str] | None
    rows: list[str]
    failed: list[dict[str, str]] = field(default_factory=list)
    duplicates: int = 0
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels or []))

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "read": len(self.texts), "duplicates": self.duplicates,
                "failed": len(self.failed)}


def is_text_source(src: str | os.PathLike, *, text_col: str = "text") -> bool:
    """Whether ``src`` holds texts: a ``.txt`` file, a manifest with a ``text_col`` column
    (and no ``path`` column), or a folder whose class folders hold only ``.txt`` files."""
    src = os.fspath(src)
    ext = Path(src).suffix.lower()
    if os.path.isfile(src):
        if ext in TEXT_EXTENSIONS:
            return not _lists_files(src)
        if ext in _MANIFEST:
            try:
                cols = _columns(src)
            except InputError:
                return False
            return text_col in cols
        return False
    if os.path.isdir(src):
        files = [f for _, _, fs in os.walk(src) for f in fs if not f.startswith(".")]
        return bool(files) and all(Path(f).suffix.lower() in TEXT_EXTENSIONS for f in files)
    return False


def _lists_files(path: str, sample: int = 20) -> bool:
    """Whether a ``.txt`` file is a listing of image files (most of its first lines name
    existing files, relative to its folder), which image commands read, not texts."""
    base = os.path.dirname(os.path.abspath(path))
    lines = [ln.strip() for ln in _decode(_read(path)).splitlines()[: 5 * sample]
             if ln.strip() and not ln.startswith("#")][:sample]
    hits = sum(os.path.isfile(ln if os.path.isabs(ln) else os.path.join(base, ln)) for ln in lines)
    return bool(lines) and hits * 2 > len(lines)


def read_texts(
    src: str | os.PathLike, *, text_col: str = "text", label_col: str | None = "label",
    labeled: bool | None = None,
) -> TextInputs:
    """Read texts (and labels) from a manifest, a ``.txt`` file or a folder of class folders.

    Parameters
    ----------
    src : path
    text_col, label_col : str
        Columns of a manifest.
    labeled : bool or None, default=None
        ``True``: labels are required (a manifest without ``label_col`` is an error);
        ``False``: labels are ignored; ``None``: read them when the source has them.

    Returns
    -------
    TextInputs

    Raises
    ------
    InputError
        No such source, an unreadable file, a missing column (the columns found are
        listed), no readable text at all.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(p, "w").write("text,label\\ngreat phone,1\\n ,0\\nawful,\\n")
    >>> ds = read_texts(p)
    >>> ds.texts, ds.labels, [f["reason"] for f in ds.failed]
    (['great phone'], ['1'], ['whitespace-only text', 'empty label'])
    """
    src = os.fspath(src)
    if not os.path.exists(src):
        raise InputError(f"{src}: no such file or folder")
    ext = Path(src).suffix.lower()
    if os.path.isdir(src):
        out = _from_folder(src, labeled is not False)
    elif ext in _MANIFEST:
        out = _from_manifest(src, text_col, label_col, labeled)
    elif ext in TEXT_EXTENSIONS:
        if labeled:
            raise InputError(f"{src}: a .txt file holds texts without labels; give a CSV with "
                             f"'{text_col}' and '{label_col}' columns or a folder of class folders")
        out = _from_lines(src)
    else:
        raise InputError(f"{src}: expected a .csv/.tsv/.parquet manifest with a '{text_col}' column, "
                         f"a .txt file (one text per line) or a folder of class folders of .txt files")
    if not out.texts:
        reasons = "; ".join(f"{f['row']}: {f['reason']}" for f in out.failed[:3])
        raise InputError(f"{src}: no readable text" + (f" ({reasons})" if reasons else ""))
    seen: set[str] = set()
    for t in out.texts:
        out.duplicates += t in seen
        seen.add(t)
    return out


#: An undecodable byte b is read as the private-use character U+10FF00 + b (bytes 0x80-0xFF
#: only), which every string tool (pandas included) passes through, so only its row fails.
_BAD_BYTE = {0xDC00 + b: 0x10FF00 + b for b in range(0x80, 0x100)}


def _decode(raw: bytes) -> str:
    return raw.decode(ENCODING, "surrogateescape").translate(_BAD_BYTE).removeprefix("\ufeff")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _from_lines(path: str) -> TextInputs:
    texts, rows, failed = [], [], []
    for n, line in enumerate(_decode(_read(path)).splitlines(), 1):
        why = text_problem(line)
        if why:
            failed.append({"row": f"line {n}", "reason": why})
        else:
            texts.append(line)
            rows.append(f"line {n}")
    return TextInputs(texts, None, rows, failed, source=path)


def _from_folder(root: str, labeled: bool) -> TextInputs:
    texts, labels, rows, failed = [], [], [], []
    for cls in sorted(os.listdir(root)):
        d = os.path.join(root, cls)
        if cls.startswith(".") or not os.path.isdir(d):
            if not cls.startswith("."):
                failed.append({"row": d, "reason": "file outside the class folders"})
            continue
        for dirpath, dirnames, files in os.walk(d, followlinks=True):
            dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                if name.startswith("."):
                    continue
                if Path(name).suffix.lower() not in TEXT_EXTENSIONS:
                    failed.append({"row": path, "reason": "not a .txt file"})
                    continue
                text = _decode(_read(path)).strip("\r\n")
                why = text_problem(text)
                if why:
                    failed.append({"row": path, "reason": why})
                    continue
                texts.append(text)
                labels.append(cls)
                rows.append(path)
    if not texts and not failed:
        raise InputError(f"{root}: no class subfolders with .txt files found; expected ROOT/<class>/<file>.txt")
    return TextInputs(texts, labels if labeled else None, rows, failed, source=root)


def _frame(path: str) -> Any:
    import pandas as pd

    ext = Path(path).suffix.lower()
    try:
        if ext in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(io.StringIO(_decode(_read(path))), sep="\t" if ext == ".tsv" else ",",
                           dtype=str, keep_default_na=False, na_values=[""])
    except ImportError as exc:
        raise InputError(f"{path}: reading parquet needs pyarrow: pip install 'deepfeat[parquet]'") from exc
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - pandas raises many parser errors
        raise InputError(f"{path}: cannot read manifest: {str(exc).splitlines()[0]}") from None


def read_columns(path: str | os.PathLike) -> list[str]:
    """The column names of a manifest (raises :class:`InputError` when it cannot be read)."""
    return _columns(os.fspath(path))


def _columns(path: str) -> list[str]:
    return [str(c) for c in _frame(path).columns]


def _from_manifest(path: str, text_col: str, label_col: str | None, labeled: bool | None) -> TextInputs:
    df = _frame(path)
    cols = [str(c) for c in df.columns]
    want = [text_col] + ([label_col] if labeled and label_col else [])
    missing = [c for c in want if c not in cols]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; columns found: {', '.join(cols)}. "
            f"Use --text-column/--label-column to name them."
        )
    use_labels = labeled is not False and label_col is not None and label_col in cols
    texts, labels, rows, failed = [], [], [], []
    lab_values = df[label_col].tolist() if use_labels else [None] * len(df)
    for n, (t, lab) in enumerate(zip(df[text_col].tolist(), lab_values), 2):  # 2: header, 1-based
        t = "" if t is None or (isinstance(t, float) and t != t) else str(t)
        why = text_problem(t)
        if not why and use_labels and (lab is None or (isinstance(lab, float) and lab != lab) or not str(lab).strip()):
            why = "empty label"
        if why:
            failed.append({"row": f"line {n}", "reason": why})
            continue
        texts.append(t)
        labels.append(str(lab).strip() if use_labels else None)
        rows.append(f"line {n}")
    return TextInputs(texts, labels if use_labels else None, rows, failed, source=path)
