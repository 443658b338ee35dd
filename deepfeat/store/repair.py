"""Salvage the intact rows of a damaged cache (and its journal) into a new cache file.

:func:`repair_cache` copies every row that can still be read and checks out into a new
cache file, then merges in the journal's intact records (including any that follow a
damaged one). It never modifies the file it reads.

A truncated ``.h5`` file cannot be opened by HDF5 at all. ``repair`` pads a private copy
back to the length its superblock records, then keeps only rows whose stored chunks lie
wholly inside the bytes that survived, so the zeros of the padding never come back as
features. Chunks written by deepfeat carry a Fletcher-32 checksum, so a damaged chunk
fails to read and its rows are dropped rather than returned wrong.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from deepfeat.exceptions import CacheCorruptError, CacheError
from deepfeat.store.format import ALLOWED_DTYPES, H5_ERRORS, JOURNAL_SUFFIX, KEY_LENGTH, MAX_DIM
from deepfeat.store.journal import scan_journal
from deepfeat.store.layout import lowercase_hex, refuse_plugin_filters, require_hard_link
from deepfeat.store.segments import read_manifest, segment_dir
from deepfeat.store.verify import plain_attrs, read_blocks, verify_cache
from deepfeat.store.writer import FeatureCache

__all__ = ["repair_cache"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _allocated_rows(ds: h5py.Dataset) -> int:
    """Rows of ``ds`` that the file actually stores (a forged shape claims more)."""
    n = ds.shape[0]
    if n == 0:
        return 0
    if ds.chunks is None:
        return n if ds.id.get_storage_size() >= ds.size * ds.dtype.itemsize else 0
    top = 0
    for i in range(ds.id.get_num_chunks()):
        info = ds.id.get_chunk_info(i)
        top = max(top, info.chunk_offset[0] + ds.chunks[0])
    return min(n, top)


def _read_surviving(
    ds: h5py.Dataset, s: int, e: int, surviving: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``s:e`` of a dataset in a truncated file padded with zeros, and which are real.

    A row counts only when all of its stored bytes lie before ``surviving``. Uncompressed
    chunks are decoded row by row from their raw bytes (their checksum covers the whole
    chunk, so a chunk cut in the middle cannot be read the ordinary way).
    """
    out = np.zeros((e - s, *ds.shape[1:]), dtype=ds.dtype)
    ok = np.zeros(e - s, dtype=bool)
    row_bytes = int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize
    if ds.chunks is None:
        off = ds.id.get_offset()
        if off is None:
            return out, ok
        out[:] = ds[s:e]
        ends = off + (np.arange(s, e, dtype=np.int64) + 1) * row_bytes
        return out, ends <= surviving
    plist = ds.id.get_create_plist()
    filters = {plist.get_filter(i)[0] for i in range(plist.get_nfilters())}
    raw_ok = filters <= {3} and tuple(ds.chunks[1:]) == tuple(ds.shape[1:])  # row-major rows
    step = ds.chunks[0]
    zeros = (0,) * (ds.ndim - 1)
    for c0 in range(s // step * step, e, step):
        lo, hi = max(s, c0), min(e, c0 + step)
        info = ds.id.get_chunk_info_by_coord((c0, *zeros))
        if info.byte_offset is None:
            continue
        if info.byte_offset + info.size <= surviving:
            with contextlib.suppress(OSError, ValueError):
                out[lo - s : hi - s] = ds[lo:hi]
                ok[lo - s : hi - s] = True
        elif raw_ok:
            whole = max(0, surviving - info.byte_offset) // row_bytes
            top = min(hi, c0 + whole)
            if top > lo:
                raw = ds.id.read_direct_chunk((c0, *zeros))[1]
                rows = np.frombuffer(
                    raw, dtype=ds.dtype, count=(top - c0) * row_bytes // ds.dtype.itemsize
                )
                out[lo - s : top - s] = rows.reshape(top - c0, *ds.shape[1:])[lo - c0 :]
                ok[lo - s : top - s] = True
    return out, ok


def _salvage_blocks(
    keys: h5py.Dataset, feats: h5py.Dataset, n: int, surviving: int | None
) -> Iterator[tuple[int, int, Any, Any, np.ndarray, str]]:
    """Like :func:`_blocks`, plus a mask of rows whose bytes survived a truncation."""
    if surviving is None:
        for s, e, k, x, err in read_blocks(keys, feats, n):
            yield s, e, k, x, np.ones(e - s, dtype=bool), err
        return
    step = feats.chunks[0] if feats.chunks else 4096
    for s in range(0, n, step):
        e = min(n, s + step)
        try:
            k, ok_k = _read_surviving(keys, s, e, surviving)
            x, ok_x = _read_surviving(feats, s, e, surviving)
        except H5_ERRORS as exc:
            yield s, e, None, None, np.zeros(e - s, dtype=bool), str(exc)
            continue
        yield s, e, k, x, ok_k & ok_x, ""


# ---------------------------------------------------------------------------- repair
def _stored_eof(path: str) -> int | None:
    """End-of-file address recorded in an HDF5 superblock (None when none is found)."""
    size = os.path.getsize(path)
    offsets = [0] + [512 << i for i in range(40) if (512 << i) < size]
    with open(path, "rb") as fh:
        for base in offsets:
            fh.seek(base)
            head = fh.read(128)
            if head[:8] != _HDF5_SIGNATURE:
                continue
            ver = head[8]
            if ver in (0, 1):
                osz, pos = head[13], 24 + (4 if ver == 1 else 0)
            elif ver in (2, 3):
                osz, pos = head[9], 12
            else:
                return None
            if osz not in (2, 4, 8) or len(head) < pos + 3 * osz:
                return None
            fmt = {2: "<H", 4: "<I", 8: "<Q"}[osz]
            base_addr = struct.unpack_from(fmt, head, pos)[0]
            eof = struct.unpack_from(fmt, head, pos + 2 * osz)[0]
            return int(base_addr + eof)
    return None


@contextlib.contextmanager
def _open_salvageable(
    path: str, scratch: str
) -> Iterator[tuple[h5py.File | None, int | None, str]]:
    """Open ``path`` for salvage; a truncated file is padded (in a private copy) first.

    Yields ``(file or None, surviving byte count or None, note)``.
    """
    try:
        f = h5py.File(path, "r")
    except H5_ERRORS as exc:
        eof = _stored_eof(path) if os.path.isfile(path) else None
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        if eof is None or eof <= size or eof > size + (1 << 36):
            yield None, None, f"cannot open the .h5 file ({exc})"
            return
        with open(path, "rb") as src, open(scratch, "wb") as dst:
            while chunk := src.read(1 << 24):
                dst.write(chunk)
            dst.truncate(eof)  # zero-filled (sparse) up to the recorded length
        try:
            try:
                f = h5py.File(scratch, "r")
            except OSError as exc2:
                yield (
                    None,
                    None,
                    f"cannot open the .h5 file even padded to its recorded length ({exc2})",
                )
                return
            with f:
                yield (
                    f,
                    size,
                    f"the file is truncated ({size:,} of {eof:,} bytes); rows stored past the cut are dropped",
                )
        finally:
            with contextlib.suppress(OSError):
                os.remove(scratch)
        return
    with f:
        yield f, None, ""


def _salvage_space(
    f: h5py.File,
    name: str,
    group: Any,
    surviving: int | None,
    out: FeatureCache,
    taken: dict[str, set[str]],
) -> dict[str, Any]:
    info: dict[str, Any] = {"declared_rows": 0, "salvaged": 0, "dropped": 0, "notes": []}
    notes = info["notes"]
    try:
        if "keys" not in group or "features" not in group:
            notes.append("no 'keys'/'features' datasets")
            return info
        keys = require_hard_link(group, "keys", name)
        feats = require_hard_link(group, "features", name)
    except H5_ERRORS as exc:
        notes.append(f"unreadable ({exc})")
        return info
    if not (
        isinstance(keys, h5py.Dataset)
        and keys.ndim == 1
        and keys.dtype == np.dtype(f"S{KEY_LENGTH}")
    ):
        notes.append("'keys' is not a 1-D |S32 dataset; space skipped")
        return info
    if not (
        isinstance(feats, h5py.Dataset)
        and feats.ndim == 2
        and str(feats.dtype) in ALLOWED_DTYPES
        and 0 < feats.shape[1] <= MAX_DIM
    ):
        notes.append(
            "'features' is not a 2-D float16/float32 dataset of a plausible width; space skipped"
        )
        return info
    try:
        for ds in (keys, feats):
            refuse_plugin_filters(ds, f"space {name!r}")
        declared = max(keys.shape[0], feats.shape[0])
        n = min(_allocated_rows(keys), _allocated_rows(feats))
    except H5_ERRORS as exc:
        notes.append(f"unreadable ({exc})")
        return info
    info["declared_rows"] = declared
    attrs, _ = plain_attrs(group)
    attrs = {
        k: v
        for k, v in attrs.items()
        if k not in ("dim", "dtype")
        and not (isinstance(v, str) and v.startswith(("<unsupported", "<unreadable", "<array")))
    }
    seen = taken.setdefault(name, set())
    salvaged = 0
    for s, e, k, x, intact, err in _salvage_blocks(keys, feats, n, surviving):
        if err:
            notes.append(f"rows {s}-{e - 1} unreadable ({err})")
            continue
        good = lowercase_hex(k) & np.isfinite(x.astype(np.float32)).all(axis=1) & intact
        ks = [kk.decode("ascii") if g else "" for kk, g in zip(k.tolist(), good)]
        sel = []
        for i, kk in enumerate(ks):
            if good[i] and kk not in seen:
                seen.add(kk)
                sel.append(i)
        if sel:
            out.append(name, attrs, [ks[i] for i in sel], x[sel])
            salvaged += len(sel)
    info["salvaged"] = salvaged
    info["dropped"] = declared - salvaged
    if not notes and info["dropped"]:
        notes.append(
            "rows with malformed keys, non-finite values, duplicates or lost storage dropped"
        )
    return info


def repair_cache(path: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Copy every intact row of a damaged cache (and its journal) into a new cache file.

    Parameters
    ----------
    path : str or path-like
        The damaged cache; it is only read.
    out : str or path-like
        The new cache file; it must not exist yet.

    Returns
    -------
    dict
        ``rows_salvaged``, ``rows_dropped``, per-space details in ``spaces``, the journal's
        contribution in ``journal``, notes on the source in ``source_notes``, and
        ``verified`` (the new file passed :func:`verify_cache`).

    Raises
    ------
    CacheError
        ``out`` exists, or is the source itself.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> cache = FeatureCache(os.path.join(d, "c.h5"))
    >>> with cache.writer():
    ...     cache.append("s", {}, ["0" * 32], np.ones((1, 2), np.float32))
    >>> repair_cache(cache.path, os.path.join(d, "fixed.h5"))["rows_salvaged"]
    1
    """
    path, out = os.fspath(path), os.fspath(out)
    if os.path.abspath(path) == os.path.abspath(out):
        raise CacheError(f"{out}: repair writes a new file; choose an --out other than the source")
    for p in (out, out + JOURNAL_SUFFIX):
        if os.path.lexists(p):
            raise CacheError(
                f"{p} already exists; repair writes a new file -- choose another --out"
            )
    if not os.path.exists(path) and not os.path.exists(path + JOURNAL_SUFFIX):
        raise CacheError(f"{path}: no such cache file")
    res: dict[str, Any] = {
        "source": path,
        "out": out,
        "spaces": {},
        "journal": {},
        "source_notes": [],
    }
    target = FeatureCache(out, lock_timeout=0)
    taken: dict[str, set[str]] = {}
    with target.writer():
        for src in _data_files(path, res["source_notes"]) if os.path.exists(path) else []:
            with _open_salvageable(src, out + ".tmp-source") as (f, surviving, note):
                if note:
                    res["source_notes"].append(note)
                if f is not None:
                    try:
                        groups = [(n, g) for n, g in _salvage_groups(f, res["source_notes"])]
                    except H5_ERRORS as exc:
                        res["source_notes"].append(f"cannot list the feature spaces ({exc})")
                        groups = []
                    for name, group in groups:
                        got = _salvage_space(f, name, group, surviving, target, taken)
                        have = res["spaces"].get(name)
                        if have is None:
                            res["spaces"][name] = got
                        else:
                            for k in ("declared_rows", "salvaged", "dropped"):
                                have[k] += got[k]
                            have["notes"] += got["notes"]
        scan = scan_journal(path + JOURNAL_SUFFIX)
        j_added, j_skipped = 0, 0
        for rec in scan.records:
            width = target.space_info(rec.space)
            if width is not None and width["dim"] != rec.features.shape[1]:
                j_skipped += 1
                continue
            kk = np.array(rec.keys, dtype=f"S{KEY_LENGTH}")
            good = lowercase_hex(kk) & np.isfinite(rec.features.astype(np.float32)).all(axis=1)
            seen = taken.setdefault(rec.space, set())
            sel = []
            for i, k in enumerate(rec.keys):
                if good[i] and k not in seen:
                    seen.add(k)
                    sel.append(i)
            if sel:
                target.append(rec.space, rec.attrs, [rec.keys[i] for i in sel], rec.features[sel])
                j_added += len(sel)
                sp = res["spaces"].setdefault(
                    rec.space, {"declared_rows": 0, "salvaged": 0, "dropped": 0, "notes": []}
                )
                sp["salvaged"] += len(sel)
        res["journal"] = {
            "records": len(scan.records),
            "rows_added": j_added,
            "stranded_records": len(scan.stranded),
            "records_skipped": j_skipped,
        }
    res["rows_salvaged"] = sum(s["salvaged"] for s in res["spaces"].values())
    res["rows_dropped"] = sum(max(0, s["dropped"]) for s in res["spaces"].values())
    if res["rows_salvaged"]:
        res["verified"] = verify_cache(out)["ok"]
    else:
        res["verified"] = False
        res["source_notes"].append("nothing could be salvaged; no file was written")
    return res


def _data_files(path: str, notes: list[str]) -> list[str]:
    """The files holding a cache's rows: the file itself, or its segments (version 2)."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format_version") != 2:
                return [path]
            try:
                segments = [s.file for s in read_manifest(f, path)]
            except CacheCorruptError as exc:
                notes.append(f"{exc}; salvaging every segment file in the folder instead")
                segments = None
    except H5_ERRORS:
        folder = segment_dir(path)
        if not os.path.isdir(folder):
            return [path]  # a damaged one-file cache: salvaged as such
        notes.append("the cache file is unreadable; salvaging every segment file in its folder")
        segments = None
    folder = segment_dir(path)
    if segments is None:
        found = [n for n in os.listdir(folder) if n.endswith(".h5")] if os.path.isdir(folder) else []
        segments = sorted(found, key=lambda n: os.path.getmtime(os.path.join(folder, n)))
    files = []
    for name in segments:
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            files.append(p)
        else:
            notes.append(f"segment {name} is missing; its rows are lost")
    return files


def _salvage_groups(f: h5py.File, notes: list[str]) -> Iterator[tuple[str, Any]]:
    if "spaces" not in f:
        return
    try:
        spaces = require_hard_link(f, "spaces", "/")
    except CacheCorruptError as exc:
        notes.append(str(exc))
        return
    if not isinstance(spaces, h5py.Group):
        notes.append("/spaces is not a group")
        return
    for name in list(spaces):
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            notes.append(f"space {name!r} skipped: its name is not valid UTF-8")
            continue
        try:
            yield name, require_hard_link(spaces, name, "/spaces")
        except CacheCorruptError as exc:
            notes.append(f"space {name!r} skipped: {exc}")
