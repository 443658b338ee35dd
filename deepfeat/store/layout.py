"""What a valid cache file looks like inside, checked as it is opened and read.

The reader, the writer and ``deepfeat cache verify / repair`` all take their checks of an
HDF5 file from here: root attributes, the ``/spaces`` groups (hard links only), the
``keys`` and ``features`` datasets (dtypes, shapes, storage that backs the claimed size,
no plugin filters) and the space attributes. Reading a cache never executes code: only
numeric arrays, byte-string keys and JSON attributes are read, and each is validated.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

import h5py
import numpy as np

from deepfeat.exceptions import CacheCorruptError, CacheError
from deepfeat.store.format import (
    ALLOWED_DTYPES,
    BUILTIN_FILTERS,
    FORMAT,
    FORMAT_VERSION,
    H5_ERRORS,
    KEY_LENGTH,
    MAX_DIM,
)

__all__ = [
    "all_hex",
    "check_dataset_storage",
    "iter_space_groups",
    "lowercase_hex",
    "open_cache_file",
    "reading",
    "refuse_plugin_filters",
    "require_hard_link",
    "root_problem",
    "space_attrs",
    "validate_space",
    "write_space_attrs",
]

_ALL_HEX = np.zeros(256, dtype=bool)
_ALL_HEX[np.frombuffer(b"0123456789abcdefABCDEF", dtype=np.uint8)] = True
_LOWER_HEX = np.zeros(256, dtype=bool)
_LOWER_HEX[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = True
#: Space attributes that :func:`space_attrs` decodes from JSON.
_JSON_ATTRS = ("preprocess", "versions")


def root_problem(f: h5py.File, *, max_version: int = FORMAT_VERSION) -> tuple[str, int | None]:
    """What is wrong with an open file's root attributes (``""`` if nothing), and its version."""
    try:
        fmt = f.attrs.get("format")
        version = f.attrs.get("format_version")
    except H5_ERRORS as exc:
        return f"unreadable root attributes ({exc})", None
    if isinstance(fmt, bytes):
        fmt = fmt.decode("utf-8", "replace")
    if not isinstance(fmt, str) or fmt != FORMAT:
        return f"not a deepfeat cache (format attribute {fmt!r})", None
    if not isinstance(version, (int, np.integer)) or not 1 <= int(version) <= max_version:
        return (f"cache format version {version!r} is not supported (this deepfeat reads versions "
                f"1 to {max_version}); upgrade deepfeat"), None
    return "", int(version)


def open_cache_file(path: str, cache: str, *, segment: bool = False) -> h5py.File | None:
    """Open a cache file (or a segment of cache ``cache``) after checking its root attributes.

    Returns ``None`` when the cache file does not exist; a missing segment is an error.
    """
    if not os.path.exists(path):
        if segment:
            raise CacheCorruptError(
                f"{cache}: segment {os.path.basename(path)} listed by the cache is missing. "
                f"Run `deepfeat cache verify {cache}` / `deepfeat cache repair`."
            )
        return None
    try:
        f = h5py.File(path, "r")
    except H5_ERRORS as exc:
        raise CacheCorruptError(
            f"{path}: not a readable HDF5 file ({exc}). "
            "Run `deepfeat cache verify` / `deepfeat cache repair`, or use another cache file."
        ) from None
    problem, version = root_problem(f)
    if not problem and segment and version != 1:
        problem = f"a segment must be a version-1 file, not version {version!r}"
    if problem:
        f.close()
        raise CacheCorruptError(f"{path}: {problem}")
    return f


def space_attrs(group: h5py.Group) -> dict[str, Any]:
    """A space's attributes as plain Python values; odd ones become ``"<...>"`` strings."""
    attrs: dict[str, Any] = {}
    for k in group.attrs:
        try:
            v = group.attrs[k]
        except H5_ERRORS:
            attrs[k] = "<unreadable attribute>"
            continue
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, str):  # h5py hands invalid UTF-8 over as lone surrogates
            v = v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, np.ndarray):
            v = v.tolist() if v.dtype.kind in "biuf" and v.size <= 1024 else f"<array {v.dtype} {v.shape}>"
        if not isinstance(v, (str, int, float, bool, list)):
            v = f"<unsupported attribute of type {type(v).__name__}>"
        if isinstance(v, str) and k in _JSON_ATTRS:
            try:
                v = json.loads(v)
            except ValueError:
                pass
        attrs[k] = v
    return attrs


def write_space_attrs(group: h5py.Group, attrs: dict[str, Any], skip: Iterable[str] = ()) -> None:
    """Store a space's attributes: dicts and lists as JSON, ``None`` as ``""``."""
    for k, v in attrs.items():
        if k not in skip:
            group.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else v)


def validate_space(name: str, group: Any, path: str) -> tuple[h5py.Dataset, h5py.Dataset]:
    """The ``keys`` and ``features`` datasets of space ``name`` in file ``path``, checked."""
    where = f"{path}: feature space {name!r}"
    if not isinstance(group, h5py.Group) or "keys" not in group or "features" not in group:
        raise CacheCorruptError(f"{where} lacks its 'keys' or 'features' dataset")
    for member in ("keys", "features"):
        require_hard_link(group, member, where)
    keys, feats = group["keys"], group["features"]
    if not isinstance(keys, h5py.Dataset) or keys.dtype != np.dtype(f"S{KEY_LENGTH}") or keys.ndim != 1:
        raise CacheCorruptError(f"{where}: 'keys' must be a 1-D |S{KEY_LENGTH} dataset")
    if not isinstance(feats, h5py.Dataset) or feats.ndim != 2 or str(feats.dtype) not in ALLOWED_DTYPES:
        raise CacheCorruptError(f"{where}: 'features' must be a 2-D float16/float32 dataset")
    if feats.shape[0] != keys.shape[0]:
        raise CacheCorruptError(f"{where}: {keys.shape[0]} keys but {feats.shape[0]} feature rows")
    if feats.shape[1] > MAX_DIM:
        raise CacheCorruptError(f"{where}: feature width {feats.shape[1]:,} exceeds {MAX_DIM:,}")
    for ds in (keys, feats):
        check_dataset_storage(ds, where)
    return keys, feats


def iter_space_groups(f: h5py.File, path: str) -> Iterator[tuple[str, h5py.Group]]:
    """Yield ``(name, group)`` under /spaces; soft and external links are refused."""
    if "spaces" not in f:
        return
    spaces = require_hard_link(f, "spaces", path)
    if not isinstance(spaces, h5py.Group):
        raise CacheCorruptError(f"{path}: /spaces is not a group")
    for name in spaces:  # iterating names does not follow links
        yield name, require_hard_link(spaces, name, path)


def require_hard_link(group: h5py.Group, name: str, where: str) -> Any:
    """``group[name]``, refusing soft and external links (a cache is one self-contained file)."""
    try:
        link = group.get(name, getlink=True)
    except H5_ERRORS as exc:
        raise CacheCorruptError(f"{where}: unreadable entry {name!r} ({exc})") from None
    if not isinstance(link, h5py.HardLink):
        raise CacheCorruptError(
            f"{where}: {group.name.rstrip('/')}/{name} is a {type(link).__name__}; a cache holds "
            "only plain groups and datasets (links to other paths or files are refused)"
        )
    try:
        return group[name]
    except H5_ERRORS as exc:
        raise CacheCorruptError(f"{where}: unreadable entry {name!r} ({exc})") from None


def refuse_plugin_filters(ds: h5py.Dataset, where: str) -> list[int]:
    """The HDF5 filter ids of ``ds``; :class:`CacheCorruptError` if one needs a plugin."""
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    unknown = [fid for fid in filters if fid not in BUILTIN_FILTERS]
    if unknown:
        raise CacheCorruptError(f"{where}: {ds.name} uses HDF5 filter(s) {unknown} that need a plugin; refused")
    return filters


def check_dataset_storage(ds: h5py.Dataset, where: str) -> None:
    """Refuse plugin filters and sizes the file cannot back (truncated or forged shapes)."""
    filters = refuse_plugin_filters(ds, where)
    logical = ds.size * ds.dtype.itemsize
    if logical == 0:
        return
    stored = ds.id.get_storage_size()
    compressed = any(fid in (1, 4, 5, 6, 32000) for fid in filters)
    slack = int(np.prod(ds.chunks)) * ds.dtype.itemsize if ds.chunks else 0
    if logical > stored * (1024 if compressed else 1) + slack:
        raise CacheCorruptError(
            f"{where}: {ds.name} claims shape {ds.shape} ({logical:,} bytes) but the file stores only "
            f"{stored:,} bytes of it (truncated, or a forged size)"
        )


def all_hex(raw: np.ndarray) -> bool:
    """Whether every ``|S32`` key is made of hex digits (either case: what a reader accepts)."""
    return bool(_ALL_HEX[np.ascontiguousarray(raw).view(np.uint8)].all())


def lowercase_hex(raw: np.ndarray) -> np.ndarray:
    """Boolean mask: which ``|S32`` keys are 32 lowercase hex digits (what writers write)."""
    if raw.size == 0:
        return np.zeros(0, dtype=bool)
    codes = np.frombuffer(np.ascontiguousarray(raw).tobytes(), dtype=np.uint8).reshape(len(raw), KEY_LENGTH)
    return _LOWER_HEX[codes].all(axis=1)


@contextlib.contextmanager
def reading(path: str) -> Iterator[None]:
    """Turn HDF5 read errors (bad checksums, damaged metadata) into CacheCorruptError."""
    try:
        yield
    except H5_ERRORS as exc:
        if isinstance(exc, CacheError):
            raise
        raise CacheCorruptError(
            f"{path}: damaged cache file ({exc}). Run `deepfeat cache verify {path}`, then "
            f"`deepfeat cache repair {path} --out NEW.h5` to salvage the intact rows."
        ) from None
