"""Segmented cache layout: immutable segment files plus an atomically replaced manifest.

A cache ``c.h5`` is either

* **one file** (format version 1): the rows are stored in ``c.h5`` itself; a new cache
  and a compacted cache look like this, and any deepfeat version reads it; or
* **a manifest plus segments** (format version 2): ``c.h5`` holds no rows, only the list
  of its segments (root attribute ``segments``, JSON) and, for plain h5py, a virtual
  dataset per feature space that concatenates the segments' rows. The segments are
  version-1 files in the folder ``c.h5.d/``, written once and never modified.

Adding rows writes one new segment (the rows added, nothing else) and then a new manifest
(a few kilobytes per hundred segments) that atomically replaces ``c.h5``; the cost of a
write therefore does not grow with the cache. ``deepfeat cache compact`` merges the
segments back into one file.

This module owns the manifest: naming segments, reading and validating the list, and
writing a new manifest file; :mod:`deepfeat.store.writer` commits segments with it.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from deepfeat.exceptions import CacheCorruptError
from deepfeat.store.format import H5_ERRORS, KEY_LENGTH, SEGMENT_DIR_SUFFIX
from deepfeat.store.layout import write_space_attrs

__all__ = ["Segment", "new_segment_name", "read_manifest", "segment_dir",
           "write_manifest"]

#: Highest number of segments a manifest may list (a forged list is refused beyond it).
MAX_SEGMENTS = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.h5$")


@dataclass(frozen=True)
class Segment:
    """One segment of a cache: its file name (in the segment folder) and rows per space."""

    file: str
    rows: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "rows": dict(self.rows)}


def segment_dir(path: str) -> str:
    """The folder that holds the segments of cache ``path``."""
    return path + SEGMENT_DIR_SUFFIX


def new_segment_name(kind: str) -> str:
    """A fresh, unique segment file name; ``kind`` says who wrote it (``j``: a journal merge)."""
    return f"{kind}-{uuid.uuid4().hex}.h5"


def read_manifest(f: h5py.File, path: str) -> list[Segment]:
    """The segments listed by an open version-2 cache file, validated."""
    try:
        raw = f.attrs.get("segments")
    except H5_ERRORS as exc:
        raise CacheCorruptError(f"{path}: unreadable segment list ({exc})") from None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        items = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        items = None
    if not isinstance(items, list) or len(items) > MAX_SEGMENTS:
        raise CacheCorruptError(
            f"{path}: format version 2 needs a 'segments' attribute holding a JSON list of segments"
        )
    out: list[Segment] = []
    seen: set[str] = set()
    for item in items:
        name = item.get("file") if isinstance(item, dict) else None
        rows = item.get("rows") if isinstance(item, dict) else None
        # a bare file name only: a forged manifest must not reach files outside the folder
        if not isinstance(name, str) or not _NAME.match(name) or name in seen:
            raise CacheCorruptError(f"{path}: segment list names an invalid or repeated file {name!r}")
        if not isinstance(rows, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in rows.items()
        ):
            raise CacheCorruptError(f"{path}: segment {name!r} has an invalid row count")
        seen.add(name)
        out.append(Segment(name, rows))
    return out


def write_manifest(
    tmp: str,
    path: str,
    segments: Sequence[Segment],
    spaces: dict[str, tuple[dict[str, Any], int, str]],
    format_name: str,
) -> None:
    """Write a version-2 manifest file ``tmp`` for cache ``path`` (the caller renames it).

    Parameters
    ----------
    tmp : str
        File to create.
    path : str
        The cache file ``tmp`` will replace (virtual sources are named relative to it).
    segments : sequence of Segment
        In order; a key present in two segments reads from the first.
    spaces : dict
        space -> (attributes, dim, dtype) for every space of the segments.
    format_name : str
        The root ``format`` attribute.
    """
    folder = os.path.basename(segment_dir(path))
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = format_name
        f.attrs["format_version"] = 2
        f.attrs["segments"] = json.dumps([s.to_json() for s in segments])
        group = f.create_group("spaces")
        for name, (attrs, dim, dtype) in spaces.items():
            parts = [(s.file, s.rows[name]) for s in segments if s.rows.get(name)]
            total = sum(n for _, n in parts)
            g = group.create_group(name)
            write_space_attrs(g, attrs, skip=("rows",))
            # Virtual datasets: plain h5py (and pandas through it) sees every row of every
            # segment as one matrix. A missing segment reads as NaN rows and empty keys.
            keys = h5py.VirtualLayout(shape=(total,), dtype=f"S{KEY_LENGTH}")
            feats = h5py.VirtualLayout(shape=(total, dim), dtype=dtype)
            at = 0
            for file, n in parts:
                src = f"{folder}/{file}"
                keys[at : at + n] = h5py.VirtualSource(src, f"spaces/{name}/keys", shape=(n,))
                feats[at : at + n] = h5py.VirtualSource(src, f"spaces/{name}/features", shape=(n, dim))
                at += n
            g.create_virtual_dataset("keys", keys, fillvalue=b"")
            g.create_virtual_dataset("features", feats, fillvalue=np.nan)
