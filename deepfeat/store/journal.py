"""Append-only, checksummed journal of new cache rows: its record format, reader and writer.

HDF5 files are not safe against a process killed in the middle of a write, so new rows
never go straight into the ``.h5`` file. Each batch is appended to a journal (the cache
writer's ``<cache>.journal``, or a Ray actor's own journal in ``<cache>.d/pending/``) as
one self-checking record::

    b"DFJ1" | header length (u32) | payload length (u32) | CRC-32 of header+payload (u32)
    header: UTF-8 JSON {"space", "n", "dim", "dtype", "attrs"}
    payload: n keys (32 ASCII bytes each) then the n x dim feature matrix (little-endian)

A record cut short by a crash fails its length or CRC check and is ignored, with
everything after it (:func:`read_records`); :func:`scan_journal` also finds the intact
records after a damaged stretch, for ``deepfeat cache verify / repair``. The cache later
commits the journal's rows as a new segment (see :mod:`deepfeat.store.writer`).
:class:`JournalWriter` is the one way to append records.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepfeat.exceptions import CacheError
from deepfeat.faults import kill_point
from deepfeat.store.format import ALLOWED_DTYPES, KEY_LENGTH, MAX_DIM

__all__ = ["MAGIC", "JournalRecord", "JournalRecords", "JournalScan", "JournalWriter", "append_record", "encode_record",
           "read_records", "scan_journal"]

log = logging.getLogger(__name__)

MAGIC = b"DFJ1"
_PREFIX = struct.Struct("<4sIII")
_MAX_HEADER = 1 << 20


@dataclass
class JournalRecord:
    """One batch of rows of one feature space, as a journal holds it."""

    space: str
    attrs: dict[str, Any]
    keys: list[str]
    features: np.ndarray
    end: int  # byte offset just after this record


def encode_record(space: str, attrs: dict[str, Any], keys: Sequence[str], features: np.ndarray) -> bytes:
    """The bytes of one journal record (see the module docstring)."""
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


def _decode(body: bytes, hlen: int, end: int) -> JournalRecord | None:
    """The record whose CRC-checked header and payload are ``body``; None if it does not parse."""
    plen = len(body) - hlen
    try:
        header = json.loads(body[:hlen])
        n, dim, dtype = int(header["n"]), int(header["dim"]), str(header["dtype"])
        if dtype not in ALLOWED_DTYPES or n < 0 or not 0 < dim <= MAX_DIM:
            return None
        # the header must describe exactly the payload (a forged count would otherwise
        # make the key list below absurdly long)
        if plen != n * (KEY_LENGTH + dim * np.dtype(dtype).itemsize):
            return None
        kb = body[hlen : hlen + n * KEY_LENGTH].decode("ascii")
        keys = [kb[i * KEY_LENGTH : (i + 1) * KEY_LENGTH] for i in range(n)]
        feats = np.frombuffer(body, dtype=np.dtype(dtype).newbyteorder("<"),
                              offset=hlen + n * KEY_LENGTH, count=n * dim)
        attrs = header.get("attrs") or {}
        if not isinstance(attrs, dict):
            return None
        return JournalRecord(str(header["space"]), attrs, keys, feats.reshape(n, dim).astype(dtype), end)
    except (ValueError, KeyError, UnicodeDecodeError, TypeError):
        return None


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
            offset += _PREFIX.size + hlen + plen
            rec = _decode(body, hlen, offset)
            if rec is None:
                log.warning("%s: unreadable record at byte %d; ignoring the rest",
                            path, offset - _PREFIX.size - hlen - plen)
                return
            yield rec


class JournalRecords:
    """The intact records of journal files, in order, read from disk again on every iteration.

    Only one record is in memory at a time, however long the journals are.

    Parameters
    ----------
    paths : sequence of str
        Journal files, in order of precedence; missing ones hold nothing.
    """

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __iter__(self) -> Iterator[JournalRecord]:
        return itertools.chain.from_iterable(read_records(p) for p in self.paths)

    def __bool__(self) -> bool:
        return next(iter(self), None) is not None


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
    return _decode(body, hlen, start + hlen + plen)


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


class JournalWriter:
    """Appends whole, durable records to one journal file; safe to share between threads.

    A failed append (a full disk) cuts the partial record off again, so the records
    written before it stay readable and later appends are not hidden behind it.

    Parameters
    ----------
    path : str
        The journal; created if missing, appended to otherwise.
    fsync : bool, default=True
        Flush each record to disk before :meth:`append` returns.
    exclusive : bool, default=False
        Hold an ``flock`` on the journal while it is open, so that others can tell a live
        writer's journal from one a dead writer left (the kernel releases it on death).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "mine.journal")
    >>> with JournalWriter(path) as journal:
    ...     journal.append("space0", {}, ["0" * 32], np.ones((1, 2), np.float32))
    >>> [r.keys for r in read_records(path)] == [["0" * 32]]
    True
    """

    def __init__(self, path: str, *, fsync: bool = True, exclusive: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self._lock = threading.Lock()
        # Unbuffered: a failed write leaves nothing in a buffer that a later flush or close
        # could still push to disk behind the truncation in append().
        self._fh = open(path, "ab", buffering=0)
        try:
            if exclusive:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
            self._end = self._fh.tell()
        except BaseException:
            self._fh.close()
            raise
        kill_point("journal.opened")

    @property
    def size(self) -> int:
        """Bytes of intact records in the journal."""
        return self._end

    def append(self, space: str, attrs: dict[str, Any], keys: Sequence[str], features: np.ndarray) -> None:
        """Durably append the rows ``features`` (keys ``keys``) of ``space`` as one record.

        Raises
        ------
        CacheError
            The record could not be written (it is not in the journal).
        """
        record = encode_record(space, attrs, list(keys), features)
        with self._lock:
            fh = self._fh
            kill_point("journal.torn", lambda: (fh.write(record[: len(record) // 2]), os.fsync(fh.fileno())))
            try:
                append_record(fh, record, fsync=self.fsync)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fh.fileno(), self._end)
                    fh.seek(self._end)
                raise CacheError(
                    f"{self.path}: cannot write ({exc.strerror or exc}); the rows written "
                    "before this batch are kept. Free disk space and run again to resume."
                ) from exc
            self._end += len(record)
        kill_point("journal.appended")

    def truncate(self) -> None:
        """Empty the journal (its rows are committed)."""
        with self._lock:
            self._fh.truncate(0)
            self._fh.seek(0)
            self._end = 0

    def close(self) -> None:
        """Close the file (and release its ``flock``)."""
        self._fh.close()

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
