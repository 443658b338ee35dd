"""The in-memory index of a cache: which file holds the row of each key.

:func:`load_index` reads the journal first, then the cache file and its segments, so a
commit that happens in between cannot hide rows from a reader. Only the keys are read
(one ``|S32`` array per file); the rows stay on disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np

from deepfeat.exceptions import CacheCorruptError
from deepfeat.store.atomic import file_sig
from deepfeat.store.journal import read_records
from deepfeat.store.keyindex import KeyIndex
from deepfeat.store.layout import (
    all_hex,
    iter_space_groups,
    open_cache_file,
    reading,
    space_attrs,
    validate_space,
)
from deepfeat.store.segments import Segment, read_manifest, segment_dir

__all__ = ["CacheIndex", "SpaceIndex", "load_index"]


class SpaceIndex:
    """In-memory index of one feature space: key -> row in the files, plus journal rows.

    Parameters
    ----------
    attrs : dict
        The space's attributes.
    dim : int
        Width of its rows.
    dtype : str
        Stored dtype of its rows.
    """

    def __init__(self, attrs: dict[str, Any], dim: int, dtype: str) -> None:
        self.attrs = attrs
        self.dim = dim
        self.dtype = dtype
        self.h5_rows = KeyIndex()  # key -> row of the files' datasets, numbered across parts
        # (file, rows) of each file holding rows of this space, in order: global row r of
        # h5_rows is local row r - starts[p] of part p
        self.parts: list[tuple[str, int]] = []
        self.starts = np.zeros(1, dtype=np.int64)
        # keys of rows that are still only in the journal; the rows stay on disk (read back
        # on demand), so memory does not grow with the journal
        self.j_rows: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.j_rows or key in self.h5_rows

    def __len__(self) -> int:
        journal_only = int((self.h5_rows.lookup(list(self.j_rows)) < 0).sum()) if self.j_rows else 0
        return len(self.h5_rows) + journal_only

    def contains(self, keys: Sequence[str]) -> np.ndarray:
        """Boolean mask: which ``keys`` have a row (in the files or the journal)."""
        found = self.h5_rows.lookup(keys) >= 0
        if self.j_rows:
            for i in np.flatnonzero(~found).tolist():
                found[i] = keys[i] in self.j_rows
        return found


#: space name -> its index.
CacheIndex = dict[str, SpaceIndex]


def load_index(path: str, journal_path: str) -> tuple[CacheIndex, list[Segment] | None, tuple[int, int, int] | None]:
    """Index cache ``path`` and its journal.

    Returns
    -------
    spaces : dict
        Space name -> :class:`SpaceIndex`.
    manifest : list of Segment or None
        The segments of a version-2 cache; ``None`` when the rows are in the file itself.
    sig : tuple or None
        :func:`~deepfeat.store.atomic.file_sig` of the cache file as it was read.
    """
    spaces: CacheIndex = {}
    # Journal first, then the .h5 file: a checkpoint in between cannot hide rows.
    for rec in read_records(journal_path):
        sp = spaces.get(rec.space)
        if sp is None:
            sp = spaces[rec.space] = SpaceIndex(rec.attrs, rec.features.shape[1], str(rec.features.dtype))
        sp.j_rows.update(rec.keys)
    manifest: list[Segment] | None = None
    sig = file_sig(path)
    raws: dict[str, list[np.ndarray]] = {}
    f = open_cache_file(path, path)
    if f is not None:
        with f, reading(path):
            if int(f.attrs["format_version"]) >= 2:
                manifest = read_manifest(f, path)
            else:
                _index_file(f, path, path, spaces, raws, None)
    for seg in manifest or ():
        seg_path = os.path.join(segment_dir(path), seg.file)
        g = open_cache_file(seg_path, path, segment=True)
        with g, reading(seg_path):
            _index_file(g, seg_path, path, spaces, raws, seg)
    for name, parts in raws.items():
        sp = spaces[name]
        sp.h5_rows = KeyIndex(np.concatenate(parts) if len(parts) > 1 else parts[0])
        sp.starts = np.concatenate([[0], np.cumsum([n for _, n in sp.parts])]).astype(np.int64)
    return spaces, manifest, sig


def _index_file(f: h5py.File, path: str, cache: str, spaces: CacheIndex,
                raws: dict[str, list[np.ndarray]], seg: Segment | None) -> None:
    """Index the rows of one file (the cache itself, or a segment ``seg`` of it)."""
    for name, group in iter_space_groups(f, cache):
        keys, feats = validate_space(name, group, path)
        if seg is not None and keys.shape[0] != seg.rows.get(name, 0):
            raise CacheCorruptError(
                f"{cache}: segment {seg.file} holds {keys.shape[0]} rows of space {name!r}, "
                f"its manifest says {seg.rows.get(name, 0)}"
            )
        attrs = space_attrs(group)
        sp = spaces.get(name)
        if sp is None:
            sp = spaces[name] = SpaceIndex(attrs, feats.shape[1], str(feats.dtype))
        else:
            if not sp.parts:
                sp.attrs = attrs
            if sp.dim != feats.shape[1]:
                raise CacheCorruptError(
                    f"{path}: space {name!r} has width {feats.shape[1]} here "
                    f"but {sp.dim} in the journal or another segment"
                )
        raw = keys[...]
        if not all_hex(raw):
            raise CacheCorruptError(f"{path}: feature space {name!r} has keys that are not hex digests")
        if len(raw):
            raws.setdefault(name, []).append(raw)
            sp.parts.append((path, len(raw)))
