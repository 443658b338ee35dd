"""Writing one version-1 file of rows: a new segment, a new cache, or a compacted cache.

Rows come as journal records (:class:`~deepfeat.store.journal.JournalRecord`); a row
whose key the file (or the cache it joins) already holds is skipped, so a record merged
twice never adds a row twice. Every chunk carries a Fletcher-32 checksum, and the rows
are read back before the file may replace anything (HDF5 may report a failed write only
when an id is freed).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import h5py
import numpy as np

from deepfeat.exceptions import CacheCorruptError
from deepfeat.faults import kill_point
from deepfeat.store.atomic import clear_frames
from deepfeat.store.format import FORMAT, H5_ERRORS, KEY_CHUNK_ROWS, KEY_LENGTH, rows_per_chunk
from deepfeat.store.index import SpaceIndex
from deepfeat.store.journal import JournalRecord
from deepfeat.store.layout import space_attrs, validate_space, write_space_attrs

__all__ = ["SpaceMeta", "bytes_needed", "read_back", "write_rows_file"]

#: Per space: (attributes, dim, dtype, rows added).
SpaceMeta = tuple[dict[str, Any], int, str, int]


def write_rows_file(tmp: str, records: Iterable[JournalRecord], known: dict[str, SpaceIndex] | None = None,
                    sizes: dict[str, int] | None = None, *,
                    where: str | None = None) -> tuple[int, dict[str, int], dict[str, SpaceMeta]]:
    """Write the records' rows that ``known`` lacks to a new file ``tmp``.

    Parameters
    ----------
    tmp : str
        The file to write (created, or added to).
    records : iterable of JournalRecord
        The rows, in order of precedence.
    known : dict, optional
        The index of the cache the file joins: rows it holds are skipped.
    sizes : dict, optional
        Rows expected per space: a small file gets small chunks.
    where : str, optional
        The cache file that errors name (default ``tmp``).

    Returns
    -------
    added : int
        Rows written.
    grown : dict
        The first new row per space.
    meta : dict
        Per space: attributes, dim, dtype, rows added.
    """
    added = 0
    grown: dict[str, int] = {}
    meta: dict[str, SpaceMeta] = {}
    with h5py.File(tmp, "a") as f:
        if "format" not in f.attrs:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = 1
        try:
            spaces = f.require_group("spaces")
            present: dict[str, set[str]] = {}
            for rec in records:
                n = _merge(where or tmp, spaces, rec, present, grown, known, (sizes or {}).get(rec.space))
                added += n
                a, d, t, m = meta.get(rec.space, (None, 0, "", 0))
                if a is None:
                    g = spaces[rec.space]
                    a = space_attrs(g)
                    d, t = int(g["features"].shape[1]), str(g["features"].dtype)
                meta[rec.space] = (a, d, t, m + n)
                kill_point("checkpoint.merged")
            f.flush()
        except BaseException as exc:
            # Release the datasets while the file is still open: freeing them after
            # a close that failed (e.g. on a full disk) can crash HDF5.
            spaces = None
            clear_frames(exc)
            raise
    return added, grown, meta


def _create_space(spaces: h5py.Group, rec: JournalRecord, expect: int | None) -> None:
    n, dim = rec.features.shape
    grp = spaces.create_group(rec.space)
    write_space_attrs(grp, rec.attrs)
    grp.attrs["dim"] = dim
    grp.attrs["dtype"] = str(rec.features.dtype)
    grp.attrs.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    cr = rows_per_chunk(dim, rec.features.dtype.itemsize)
    kr = KEY_CHUNK_ROWS
    if expect:  # a segment of known size: chunks no larger than it
        cr, kr = min(cr, max(16, expect)), min(kr, max(16, expect))
    # fletcher32: every chunk carries a checksum, so damaged rows fail to read
    # (CacheCorruptError) instead of coming back as silently wrong numbers.
    grp.create_dataset("keys", shape=(0,), maxshape=(None,), dtype=f"S{KEY_LENGTH}", chunks=(kr,),
                       fletcher32=True)
    grp.create_dataset("features", shape=(0, dim), maxshape=(None, dim),
                       dtype=rec.features.dtype, chunks=(cr, dim), fletcher32=True)


def _merge(path: str, spaces: h5py.Group, rec: JournalRecord, present: dict[str, set[str]],
           grown: dict[str, int], known: dict[str, SpaceIndex] | None, expect: int | None) -> int:
    """Append the rows of ``rec`` that neither the file nor ``known`` holds; return how many."""
    dim = rec.features.shape[1]
    if rec.space not in spaces:
        _create_space(spaces, rec, expect)
    keys_ds, feats_ds = validate_space(rec.space, spaces[rec.space], path)
    if feats_ds.shape[1] != dim:
        raise CacheCorruptError(f"{path}: journal rows of width {dim} for a space of width {feats_ds.shape[1]}")
    seen = present.get(rec.space)
    if seen is None:
        seen = present[rec.space] = {k.decode("ascii") for k in keys_ds[...]}
    sp = known.get(rec.space) if known else None
    old = sp.h5_rows.lookup(rec.keys) >= 0 if sp is not None else np.zeros(len(rec.keys), bool)
    take = []
    for i, k in enumerate(rec.keys):
        if k not in seen and not old[i]:
            seen.add(k)
            take.append(i)
    if not take:
        return 0
    start = keys_ds.shape[0]
    grown.setdefault(rec.space, start)
    keys_ds.resize((start + len(take),))
    feats_ds.resize((start + len(take), dim))
    kill_point("checkpoint.resized")
    keys_ds[start:] = np.array([rec.keys[i] for i in take], dtype=f"S{KEY_LENGTH}")
    feats_ds[start:] = rec.features[take].astype(feats_ds.dtype)
    keys_ds.flush()  # surface write errors (a full disk) here, not in a destructor
    feats_ds.flush()
    return len(take)


def bytes_needed(records: Iterable[JournalRecord]) -> int:
    """Generous estimate of the free space a file of ``records``' rows needs."""
    need = 0  # a segment holds only the new rows: the cache is never copied
    spaces: dict[str, tuple[int, int, int]] = {}
    for rec in records:
        n, dim = rec.features.shape
        rows, _, size = spaces.get(rec.space, (0, dim, rec.features.dtype.itemsize))
        spaces[rec.space] = (rows + n, dim, size)
    for rows, dim, size in spaces.values():
        chunk = rows_per_chunk(dim, size) * dim * size
        need += rows * (dim * size + KEY_LENGTH) + 2 * chunk + 2 * KEY_CHUNK_ROWS * KEY_LENGTH
    return need + (1 << 20)


def read_back(path: str, grown: dict[str, int]) -> None:
    """Re-read the rows a write added (checksums verified) before the file may replace another."""
    try:
        with h5py.File(path, "r") as f:
            for space, start in grown.items():
                g = f["spaces"][space]
                n = g["keys"].shape[0]
                if g["features"].shape[0] != n:
                    raise OSError(f"space {space!r}: {n} keys but {g['features'].shape[0]} rows written")
                g["keys"][start:n]
                g["features"][start:n]
    except H5_ERRORS as exc:
        raise OSError(f"the rows just written do not read back ({exc})") from exc

