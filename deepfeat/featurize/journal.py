"""Append-only, checksummed journal of new cache rows.

HDF5 files are not safe against a process killed in the middle of a write, so new rows
never go straight into the ``.h5`` file. Each batch is appended to ``<cache>.journal``
as one self-checking record::

    b"DFJ1" | header length (u32) | payload length (u32) | CRC-32 of header+payload (u32)
    header: UTF-8 JSON {"space", "n", "dim", "dtype", "attrs"}
    payload: n keys (32 ASCII bytes each) then the n x dim feature matrix (little-endian)

A record cut short by a crash fails its length or CRC check and is ignored, with
everything after it. The cache later folds the journal into a fresh copy of the ``.h5``
file and swaps it in atomically (see :mod:`deepfeat.featurize.cache`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepfeat.featurize.hashing import KEY_LENGTH

__all__ = ["MAGIC", "JournalRecord", "append_record", "read_records"]

log = logging.getLogger(__name__)

MAGIC = b"DFJ1"
_PREFIX = struct.Struct("<4sIII")
_MAX_HEADER = 1 << 20
ALLOWED_DTYPES = ("float32", "float16")


@dataclass
class JournalRecord:
    space: str
    attrs: dict[str, Any]
    keys: list[str]
    features: np.ndarray
    end: int  # byte offset just after this record


def encode_record(space: str, attrs: dict[str, Any], keys: list[str], features: np.ndarray) -> bytes:
    n, dim = features.shape
    dtype = str(features.dtype)
    if dtype not in ALLOWED_DTYPES:
        raise ValueError(f"journal dtype must be one of {ALLOWED_DTYPES}, got {dtype}")
    if len(keys) != n:
        raise ValueError("keys and features disagree in length")
    header = json.dumps(
        {"space": space, "n": n, "dim": dim, "dtype": dtype, "attrs": attrs}, sort_keys=True
    ).encode()
    kbytes = "".join(keys).encode("ascii")
    if len(kbytes) != n * KEY_LENGTH:
        raise ValueError("every key must be a 32-character hex digest")
    payload = kbytes + np.ascontiguousarray(features, dtype=features.dtype.newbyteorder("<")).tobytes()
    crc = zlib.crc32(header + payload) & 0xFFFFFFFF
    return _PREFIX.pack(MAGIC, len(header), len(payload), crc) + header + payload


def append_record(fh: Any, record: bytes, *, fsync: bool = True) -> None:
    """Append one encoded record to an open binary file and flush it to the OS (and disk)."""
    view = memoryview(record)
    while view:  # an unbuffered file may take part of a write (e.g. as the disk fills up)
        written = fh.write(view)
        if not written:
            raise OSError(errno.ENOSPC, "no bytes written")
        view = view[written:]
    fh.flush()
    if fsync:
        os.fsync(fh.fileno())


def read_records(path: str) -> Iterator[JournalRecord]:
    """Yield the intact records of a journal, stopping at the first damaged one."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        offset = 0
        while True:
            prefix = fh.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size:
                if prefix:
                    log.warning("%s: ignoring a record cut short at byte %d", path, offset)
                return
            magic, hlen, plen, crc = _PREFIX.unpack(prefix)
            if magic != MAGIC or hlen > _MAX_HEADER:
                log.warning("%s: damaged record at byte %d; ignoring the rest", path, offset)
                return
            body = fh.read(hlen + plen)
            if len(body) < hlen + plen or zlib.crc32(body) & 0xFFFFFFFF != crc:
                log.warning("%s: ignoring an incomplete record at byte %d", path, offset)
                return
            try:
                header = json.loads(body[:hlen])
                n, dim, dtype = int(header["n"]), int(header["dim"]), str(header["dtype"])
                if dtype not in ALLOWED_DTYPES:
                    raise ValueError(dtype)
                # the header must describe exactly the payload (a forged count would
                # otherwise make the key list below absurdly long)
                if n < 0 or dim < 1 or plen != n * (KEY_LENGTH + dim * np.dtype(dtype).itemsize):
                    raise ValueError("header does not match payload")
                kb = body[hlen : hlen + n * KEY_LENGTH].decode("ascii")
                keys = [kb[i * KEY_LENGTH : (i + 1) * KEY_LENGTH] for i in range(n)]
                feats = np.frombuffer(body, dtype=np.dtype(dtype).newbyteorder("<"),
                                      offset=hlen + n * KEY_LENGTH, count=n * dim)
                feats = feats.reshape(n, dim).astype(dtype)
                space, attrs = str(header["space"]), header.get("attrs") or {}
                if not isinstance(attrs, dict):
                    raise ValueError("attrs must be a JSON object")
            except (ValueError, KeyError, UnicodeDecodeError, TypeError):
                log.warning("%s: unreadable record at byte %d; ignoring the rest", path, offset)
                return
            offset += _PREFIX.size + hlen + plen
            yield JournalRecord(space, attrs, keys, feats, offset)
