"""Check a cache end to end: every file, attribute, dataset, row and journal record.

:func:`verify_cache` reads everything a cache holds -- root attributes, every feature
space's attributes, datasets, shapes and rows (key format, duplicates, finite values),
the segments of a version-2 cache, and the journal -- and lists the problems it finds.
It never modifies what it reads. :mod:`deepfeat.store.repair` salvages what it finds
intact.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from deepfeat.exceptions import CacheCorruptError
from deepfeat.store.format import H5_ERRORS, JOURNAL_SUFFIX, KEY_LENGTH
from deepfeat.store.journal import scan_journal
from deepfeat.store.layout import (
    iter_space_groups,
    lowercase_hex,
    root_problem,
    space_attrs,
    validate_space,
)
from deepfeat.store.segments import read_manifest, segment_dir

__all__ = ["plain_attrs", "read_blocks", "verify_cache"]

_MAX_LISTED = 20  # problems listed per space before summarising
#: Prefixes :func:`~deepfeat.store.layout.space_attrs` gives attributes it cannot represent.
_ODD_ATTR = ("<unsupported", "<unreadable", "<array")


# ---------------------------------------------------------------------------- rows
def read_blocks(
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
        except H5_ERRORS as exc:
            if span == step:
                yield s, e, None, None, str(exc)
                continue
        for s2 in range(s, e, step):
            e2 = min(e, s2 + step)
            try:
                k, f = keys[s2:e2], feats[s2:e2]
            except H5_ERRORS as exc:
                yield s2, e2, None, None, str(exc)
                continue
            yield s2, e2, k, f, ""


def plain_attrs(group: h5py.Group) -> tuple[dict[str, Any], list[str]]:
    """A space's attributes, and the names of those of a type a cache does not hold."""
    attrs = space_attrs(group)
    odd = [
        k
        for k, v in attrs.items()
        if isinstance(v, str) and v.startswith(_ODD_ATTR)
    ]
    return attrs, odd


# ---------------------------------------------------------------------------- verify
def _verify_h5(path: str, res: dict[str, Any], jrows: dict[str, int]) -> None:
    problems = res["problems"]
    try:
        f = h5py.File(path, "r")
    except H5_ERRORS as exc:
        hint = " (the file is truncated)" if "truncated" in str(exc) else ""
        problems.append(f"not a readable HDF5 file{hint}: {exc}")
        return
    with f:
        problem, version = root_problem(f)
        if problem:
            problems.append(problem)
            return
        extra = sorted(set(f) - {"spaces"})
        if extra:
            res["warnings"].append(f"unexpected top-level entries ignored: {extra}")
        if version == 2:
            _verify_segments(f, path, res)
            for name, n in jrows.items():
                res["spaces"].setdefault(name, {"rows": 0})["journal_rows"] = n
            return
        try:
            groups = list(iter_space_groups(f, path))
        except CacheCorruptError as exc:
            problems.append(str(exc))
            return
        for name, group in groups:
            res["spaces"][name] = _verify_space(path, name, group, problems)
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
        with contextlib.suppress(*H5_ERRORS):
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


def _verify_space(path: str, name: str, group: Any, problems: list[str]) -> dict[str, Any]:
    where = f"space {name!r}"
    info: dict[str, Any] = {"rows": 0}
    try:
        keys, feats = validate_space(name, group, path)
    except CacheCorruptError as exc:
        problems.append(str(exc).replace(f"{path}: ", ""))
        return info
    except H5_ERRORS as exc:
        problems.append(f"{where}: unreadable datasets ({exc})")
        return info
    attrs, odd = plain_attrs(group)
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
    for s, e, k, x, err in read_blocks(keys, feats, n):
        if err:
            bad["unreadable"] += e - s
            if listed < _MAX_LISTED:
                problems.append(f"{where}: rows {s}-{e - 1} cannot be read ({err})")
                listed += 1
            continue
        good_key = lowercase_hex(k)
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
    >>> from deepfeat.store import FeatureCache
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
    jpath = path + JOURNAL_SUFFIX
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
        if not lowercase_hex(k).all():
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
