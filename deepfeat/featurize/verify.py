"""Check a cache file end to end, and salvage its intact rows into a new file.

:func:`verify_cache` reads everything a cache holds -- root attributes, every feature
space's attributes, datasets, shapes and rows (key format, duplicates, finite values),
and the journal -- and lists the problems it finds. :func:`repair_cache` copies every
row that can still be read and checks out into a new cache file, then folds in the
journal's intact records (including any that follow a damaged one). Neither ever
modifies the file it reads.

A truncated ``.h5`` file cannot be opened by HDF5 at all. ``repair`` pads a private copy
back to the length its superblock records, then keeps only rows whose stored chunks lie
wholly inside the bytes that survived, so the zeros of the padding never come back as
features. Chunks written by deepfeat carry a Fletcher-32 checksum, so a damaged chunk
fails to read and its rows are dropped rather than returned wrong.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from deepfeat.exceptions import CacheCorruptError, CacheError
from deepfeat.featurize.cache import (
    _H5_ERRORS,
    FORMAT,
    FORMAT_VERSION,
    MAX_DIM,
    FeatureCache,
    _require_hard_link,
)
from deepfeat.featurize.hashing import KEY_LENGTH
from deepfeat.featurize.journal import _MAX_HEADER, _PREFIX, ALLOWED_DTYPES, MAGIC, JournalRecord
from deepfeat.featurize.segments import read_manifest, segment_dir

__all__ = ["verify_cache", "repair_cache", "scan_journal"]

log = logging.getLogger(__name__)

_HEX = np.zeros(256, dtype=bool)
_HEX[list(b"0123456789abcdef")] = True
_MAX_LISTED = 20  # problems listed per space before summarising
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


# ---------------------------------------------------------------------------- journal
@dataclass
class JournalScan:
    """Every intact record of a journal, also those after a damaged stretch."""

    records: list[JournalRecord] = field(default_factory=list)
    size: int = 0
    prefix_end: int = 0  # readers and writers use the records before this offset
    damaged: list[tuple[int, int]] = field(default_factory=list)  # (start, stop) byte ranges

    @property
    def stranded(self) -> list[JournalRecord]:
        """Intact records after a damaged stretch (ignored by readers; ``repair`` keeps them)."""
        return [r for r in self.records if r.end > self.prefix_end]


def _decode_at(buf: bytes, off: int) -> JournalRecord | None:
    if off + _PREFIX.size > len(buf):
        return None
    magic, hlen, plen, crc = _PREFIX.unpack_from(buf, off)
    start = off + _PREFIX.size
    if magic != MAGIC or hlen > _MAX_HEADER or start + hlen + plen > len(buf):
        return None
    body = buf[start : start + hlen + plen]
    if zlib.crc32(body) & 0xFFFFFFFF != crc:
        return None
    try:
        header = json.loads(body[:hlen])
        n, dim, dtype = int(header["n"]), int(header["dim"]), str(header["dtype"])
        if dtype not in ALLOWED_DTYPES or n < 0 or not 0 < dim <= MAX_DIM:
            return None
        if plen != n * KEY_LENGTH + n * dim * np.dtype(dtype).itemsize:
            return None
        kb = body[hlen : hlen + n * KEY_LENGTH].decode("ascii")
        keys = [kb[i * KEY_LENGTH : (i + 1) * KEY_LENGTH] for i in range(n)]
        feats = (
            np.frombuffer(
                body,
                dtype=np.dtype(dtype).newbyteorder("<"),
                offset=hlen + n * KEY_LENGTH,
                count=n * dim,
            )
            .reshape(n, dim)
            .astype(dtype)
        )
        attrs = header.get("attrs") or {}
        if not isinstance(attrs, dict):
            return None
        return JournalRecord(str(header["space"]), attrs, keys, feats, start + hlen + plen)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def scan_journal(path: str) -> JournalScan:
    """Parse a journal, resynchronising on the record marker after any damage."""
    scan = JournalScan()
    try:
        with open(path, "rb") as fh:
            buf = fh.read()
    except FileNotFoundError:
        return scan
    scan.size = len(buf)
    off, in_prefix, bad_from = 0, True, None
    while off < len(buf):
        rec = _decode_at(buf, off)
        if rec is not None:
            if bad_from is not None:
                scan.damaged.append((bad_from, off))
                bad_from = None
            scan.records.append(rec)
            off = rec.end
            if in_prefix:
                scan.prefix_end = off
            continue
        in_prefix = False
        if bad_from is None:
            bad_from = off
        nxt = buf.find(MAGIC, off + 1)
        off = len(buf) if nxt < 0 else nxt
    if bad_from is not None:
        scan.damaged.append((bad_from, len(buf)))
    return scan


# ---------------------------------------------------------------------------- rows
def _valid_keys(raw: np.ndarray) -> np.ndarray:
    """Boolean mask: which |S32 keys are 32 lowercase hex characters."""
    if raw.size == 0:
        return np.zeros(0, dtype=bool)
    codes = np.frombuffer(np.ascontiguousarray(raw).tobytes(), dtype=np.uint8).reshape(
        len(raw), KEY_LENGTH
    )
    return _HEX[codes].all(axis=1)


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


def _blocks(
    keys: h5py.Dataset, feats: h5py.Dataset, n: int
) -> Iterator[tuple[int, int, Any, Any, str]]:
    """Yield ``(start, stop, keys, features, error)``, narrowing failures to single chunks."""
    step = feats.chunks[0] if feats.chunks else 4096
    span = max(step, (8 << 20) // max(1, feats.shape[1] * feats.dtype.itemsize) // step * step)
    for s in range(0, n, span):
        e = min(n, s + span)
        try:
            yield s, e, keys[s:e], feats[s:e], ""
            continue
        except _H5_ERRORS as exc:
            if span == step:
                yield s, e, None, None, str(exc)
                continue
        for s2 in range(s, e, step):
            e2 = min(e, s2 + step)
            try:
                k, f = keys[s2:e2], feats[s2:e2]
            except _H5_ERRORS as exc:
                yield s2, e2, None, None, str(exc)
                continue
            yield s2, e2, k, f, ""


def _salvage_blocks(
    keys: h5py.Dataset, feats: h5py.Dataset, n: int, surviving: int | None
) -> Iterator[tuple[int, int, Any, Any, np.ndarray, str]]:
    """Like :func:`_blocks`, plus a mask of rows whose bytes survived a truncation."""
    if surviving is None:
        for s, e, k, x, err in _blocks(keys, feats, n):
            yield s, e, k, x, np.ones(e - s, dtype=bool), err
        return
    step = feats.chunks[0] if feats.chunks else 4096
    for s in range(0, n, step):
        e = min(n, s + step)
        try:
            k, ok_k = _read_surviving(keys, s, e, surviving)
            x, ok_x = _read_surviving(feats, s, e, surviving)
        except _H5_ERRORS as exc:
            yield s, e, None, None, np.zeros(e - s, dtype=bool), str(exc)
            continue
        yield s, e, k, x, ok_k & ok_x, ""


def _plain_attrs(group: h5py.Group) -> tuple[dict[str, Any], list[str]]:
    attrs = FeatureCache._space_attrs(group)
    odd = [
        k
        for k, v in attrs.items()
        if isinstance(v, str) and v.startswith(("<unsupported", "<unreadable", "<array"))
    ]
    return attrs, odd


# ---------------------------------------------------------------------------- verify
def _verify_h5(path: str, res: dict[str, Any], jrows: dict[str, int]) -> None:
    problems = res["problems"]
    try:
        f = h5py.File(path, "r")
    except _H5_ERRORS as exc:
        hint = " (the file is truncated)" if "truncated" in str(exc) else ""
        problems.append(f"not a readable HDF5 file{hint}: {exc}")
        return
    with f:
        try:
            fmt = f.attrs.get("format")
            version = f.attrs.get("format_version")
        except _H5_ERRORS as exc:
            problems.append(f"unreadable root attributes: {exc}")
            return
        if isinstance(fmt, bytes):
            fmt = fmt.decode("utf-8", "replace")
        if not isinstance(fmt, str) or fmt != FORMAT:
            problems.append(f"not a deepfeat cache (format attribute {fmt!r})")
            return
        if not isinstance(version, (int, np.integer)) or not 1 <= int(version) <= FORMAT_VERSION:
            problems.append(
                f"format_version {version!r} is not supported (expected 1..{FORMAT_VERSION})"
            )
        extra = sorted(set(f) - {"spaces"})
        if extra:
            res["warnings"].append(f"unexpected top-level entries ignored: {extra}")
        if isinstance(version, (int, np.integer)) and int(version) == 2:
            _verify_segments(f, path, res)
            for name, n in jrows.items():
                res["spaces"].setdefault(name, {"rows": 0})["journal_rows"] = n
            return
        cache = FeatureCache(path)
        try:
            groups = list(cache._iter_space_groups(f))
        except CacheCorruptError as exc:
            problems.append(str(exc))
            return
        for name, group in groups:
            res["spaces"][name] = _verify_space(cache, name, group, problems)
        for name, n in jrows.items():
            res["spaces"].setdefault(name, {"rows": 0})["journal_rows"] = n


def _verify_segments(f: h5py.File, path: str, res: dict[str, Any]) -> None:
    """Verify each segment a version-2 cache lists, as a file of its own."""
    try:
        segments = read_manifest(f, path)
    except CacheCorruptError as exc:
        res["problems"].append(str(exc).replace(f"{path}: ", ""))
        return
    folder = segment_dir(path)
    res["segments"] = len(segments)
    for seg in segments:
        seg_path = os.path.join(folder, seg.file)
        if not os.path.isfile(seg_path):
            res["problems"].append(f"segment {seg.file}: missing from {folder}")
            continue
        sub: dict[str, Any] = {"problems": [], "warnings": [], "spaces": {}}
        _verify_h5(seg_path, sub, {})
        with contextlib.suppress(*_H5_ERRORS):
            with h5py.File(seg_path, "r") as g:
                if g.attrs.get("format_version") != 1:
                    sub["problems"].append("a segment must be a version-1 file")
        res["problems"] += [f"segment {seg.file}: {p}" for p in sub["problems"]]
        res["warnings"] += [f"segment {seg.file}: {w}" for w in sub["warnings"]]
        for name, info in sub["spaces"].items():
            if info.get("rows", 0) != seg.rows.get(name, 0):
                res["problems"].append(
                    f"segment {seg.file}: {info.get('rows', 0)} rows of space {name!r}, "
                    f"the manifest says {seg.rows.get(name, 0)}"
                )
            have = res["spaces"].setdefault(name, {**info, "rows": 0})
            if "dim" in have and "dim" in info and have["dim"] != info["dim"]:
                res["problems"].append(f"segment {seg.file}: space {name!r} has another width")
            have["rows"] += info.get("rows", 0)
    listed = {s.file for s in segments}
    orphans = [
        n for n in (os.listdir(folder) if os.path.isdir(folder) else [])
        if n not in listed and os.path.isfile(os.path.join(folder, n))
    ]
    if orphans:
        res["warnings"].append(
            f"{len(orphans)} file(s) in {folder} no manifest lists (left by a killed commit); "
            "the next writer removes them"
        )


def _verify_space(
    cache: FeatureCache, name: str, group: Any, problems: list[str]
) -> dict[str, Any]:
    where = f"space {name!r}"
    info: dict[str, Any] = {"rows": 0}
    try:
        keys, feats = cache._validate_space(name, group)
    except CacheCorruptError as exc:
        problems.append(str(exc).replace(f"{cache.path}: ", ""))
        return info
    except _H5_ERRORS as exc:
        problems.append(f"{where}: unreadable datasets ({exc})")
        return info
    attrs, odd = _plain_attrs(group)
    if odd:
        problems.append(f"{where}: attributes of unsupported types: {odd}")
    if attrs.get("dim") != feats.shape[1]:
        problems.append(
            f"{where}: attribute dim={attrs.get('dim')!r} but the features are {feats.shape[1]} wide"
        )
    if attrs.get("dtype") != str(feats.dtype):
        problems.append(
            f"{where}: attribute dtype={attrs.get('dtype')!r} but the features are {feats.dtype}"
        )
    n = keys.shape[0]
    info.update(
        rows=n,
        dim=int(feats.shape[1]),
        dtype=str(feats.dtype),
        backbone=attrs.get("backbone"),
        layer=attrs.get("layer"),
    )
    seen: set[bytes] = set()
    bad = {"unreadable": 0, "bad_key": 0, "duplicate_key": 0, "non_finite": 0}
    listed = 0
    for s, e, k, x, err in _blocks(keys, feats, n):
        if err:
            bad["unreadable"] += e - s
            if listed < _MAX_LISTED:
                problems.append(f"{where}: rows {s}-{e - 1} cannot be read ({err})")
                listed += 1
            continue
        good_key = _valid_keys(k)
        bad["bad_key"] += int((~good_key).sum())
        bad["non_finite"] += int((~np.isfinite(x.astype(np.float32)).all(axis=1)).sum())
        for kk in k.tolist():
            if kk in seen:
                bad["duplicate_key"] += 1
            seen.add(kk)
    for what, count in bad.items():
        if count and what != "unreadable":
            problems.append(f"{where}: {count} row(s) with {what.replace('_', ' ')}")
    info["bad_rows"] = bad
    return info


def verify_cache(path: str | os.PathLike) -> dict[str, Any]:
    """Check a cache file and its journal; list every problem found.

    Parameters
    ----------
    path : str or path-like
        The ``.h5`` cache file (its ``.journal`` beside it is checked too).

    Returns
    -------
    dict
        ``ok`` (no problems), ``problems`` and ``warnings`` (lists of strings),
        ``spaces`` (per feature space: ``rows``, ``dim``, ``dtype``, ``journal_rows``,
        ``bad_rows`` counts) and ``journal`` (``records``, ``rows``, ``bytes``,
        ``damaged_bytes``, ``stranded_records``).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "c.h5")
    >>> cache = FeatureCache(path)
    >>> with cache.writer():
    ...     cache.append("s", {"dim": 2}, ["0" * 32], np.ones((1, 2), np.float32))
    >>> verify_cache(path)["ok"]
    True
    """
    path = os.fspath(path)
    res: dict[str, Any] = {
        "path": path,
        "ok": False,
        "problems": [],
        "warnings": [],
        "spaces": {},
        "journal": {},
    }
    jpath = path + ".journal"
    if not os.path.exists(path) and not os.path.exists(jpath):
        res["problems"].append("no such cache file")
        return res
    if os.path.isdir(path):
        res["problems"].append("is a directory, not a cache file")
        return res
    scan = scan_journal(jpath)
    jrows: dict[str, int] = {}
    for rec in scan.records:
        if rec.end <= scan.prefix_end:
            jrows[rec.space] = jrows.get(rec.space, 0) + len(rec.keys)
    damaged = sum(b - a for a, b in scan.damaged)
    res["journal"] = {
        "path": jpath,
        "bytes": scan.size,
        "records": sum(1 for r in scan.records if r.end <= scan.prefix_end),
        "rows": sum(jrows.values()),
        "damaged_bytes": damaged,
        "stranded_records": len(scan.stranded),
    }
    if scan.stranded:
        res["problems"].append(
            f"journal: {len(scan.stranded)} intact record(s) after damaged bytes are ignored by readers; "
            "`deepfeat cache repair` salvages them"
        )
    elif damaged:
        res["warnings"].append(
            f"journal: the last {damaged} bytes are a torn record (a run was killed mid-write); "
            "the next writer discards them"
        )
    for rec in scan.records:
        k = np.array(rec.keys, dtype=f"S{KEY_LENGTH}")
        if not _valid_keys(k).all():
            res["problems"].append(f"journal: a record of space {rec.space!r} has malformed keys")
        if not np.isfinite(rec.features.astype(np.float32)).all():
            res["problems"].append(
                f"journal: a record of space {rec.space!r} has non-finite values"
            )
    if os.path.exists(path):
        _verify_h5(path, res, jrows)
        for rec in scan.records:
            sp = res["spaces"].get(rec.space)
            if sp and "dim" in sp and sp["dim"] != rec.features.shape[1]:
                res["problems"].append(
                    f"journal: rows of width {rec.features.shape[1]} for space {rec.space!r} "
                    f"of width {sp['dim']}"
                )
                break
    else:
        for name, n in jrows.items():
            res["spaces"][name] = {"rows": 0, "journal_rows": n}
    res["ok"] = not res["problems"]
    return res


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
    except _H5_ERRORS as exc:
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
        keys = _require_hard_link(group, "keys", name)
        feats = _require_hard_link(group, "features", name)
    except _H5_ERRORS as exc:
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
        _refuse_plugin_filters(keys, feats)
        declared = max(keys.shape[0], feats.shape[0])
        n = min(_allocated_rows(keys), _allocated_rows(feats))
    except _H5_ERRORS as exc:
        notes.append(f"unreadable ({exc})")
        return info
    info["declared_rows"] = declared
    attrs, _ = _plain_attrs(group)
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
        good = _valid_keys(k) & np.isfinite(x.astype(np.float32)).all(axis=1) & intact
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


def _refuse_plugin_filters(*datasets: h5py.Dataset) -> None:
    from deepfeat.featurize.cache import _BUILTIN_FILTERS

    for ds in datasets:
        plist = ds.id.get_create_plist()
        for i in range(plist.get_nfilters()):
            fid = plist.get_filter(i)[0]
            if fid not in _BUILTIN_FILTERS:
                raise CacheCorruptError(f"{ds.name} needs HDF5 filter plugin {fid}; refused")


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
    for p in (out, out + ".journal"):
        if os.path.lexists(p):
            raise CacheError(
                f"{p} already exists; repair writes a new file -- choose another --out"
            )
    if not os.path.exists(path) and not os.path.exists(path + ".journal"):
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
                    except _H5_ERRORS as exc:
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
        scan = scan_journal(path + ".journal")
        j_added, j_skipped = 0, 0
        for rec in scan.records:
            width = target.space_info(rec.space)
            if width is not None and width["dim"] != rec.features.shape[1]:
                j_skipped += 1
                continue
            kk = np.array(rec.keys, dtype=f"S{KEY_LENGTH}")
            good = _valid_keys(kk) & np.isfinite(rec.features.astype(np.float32)).all(axis=1)
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
    except _H5_ERRORS:
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
        spaces = _require_hard_link(f, "spaces", "/")
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
            yield name, _require_hard_link(spaces, name, "/spaces")
        except CacheCorruptError as exc:
            notes.append(f"space {name!r} skipped: {exc}")
