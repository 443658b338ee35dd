"""Content-addressed HDF5 cache of embeddings.

Layout (readable with plain h5py; see docs/cache-format.md)::

    /                          attrs: format="deepfeat-cache", format_version=1
    /spaces/<fingerprint>/     one group per feature space; attrs: fingerprint, backbone,
                               weights, weights_id, layer, pool, preprocess (JSON), dim,
                               dtype, versions (JSON), created
    /spaces/<fp>/keys          (n,)  |S32  BLAKE2b-128 hex digest of each image's bytes
    /spaces/<fp>/features      (n, dim) float32 or float16, chunked along rows

Rows are keyed by the image's content hash inside a feature space whose name is a
fingerprint of backbone, weights, layer, pooling, preprocessing, compute precision and TTA
(see :mod:`deepfeat.featurize.identity`; the storage dtype is a property of the stored space).

A cache that has been added to more than once is *segmented* (format version 2, see
:mod:`deepfeat.featurize.segments`): the file then lists immutable segment files in
``<file>.d/`` (each laid out as above) and maps them into virtual datasets of the same
names, so plain h5py still sees every row. ``compact`` merges the segments back.

Crash safety: new rows go to an append-only checksummed journal (``<file>.journal``,
:mod:`deepfeat.featurize.journal`). A *checkpoint* writes the journal's rows that the
cache lacks into a new segment file, flushes it to disk, renames it into the segment
folder, then atomically replaces the manifest (the ``.h5`` file) with one that lists it,
and only then empties the journal. Its cost is proportional to the rows it adds, not to
the size of the cache. A process killed at any moment therefore leaves the old manifest
and segments intact plus a journal whose damaged tail is ignored; the next writer folds
the intact records in. Readers read the journal, then the manifest and segments, so they
never see a half-written state. One writer at a time holds ``<file>.lock``
(:class:`~deepfeat.featurize.lock.WriterLock`) for the journal; committing a segment
takes ``<file>.commit.lock`` for the moment of the commit only, so other writers
(:meth:`FeatureCache.fold_journals`) can add segments meanwhile.

Reading a cache never executes code: only numeric arrays, byte-string keys and JSON
attributes are read, and each is validated.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import itertools
import json
import logging
import os
import shutil
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from deepfeat.exceptions import CacheCorruptError, CacheError
from deepfeat.featurize.faults import kill_point
from deepfeat.featurize.hashing import KEY_LENGTH
from deepfeat.featurize.journal import ALLOWED_DTYPES, append_record, encode_record, read_records
from deepfeat.featurize.keyindex import KeyIndex
from deepfeat.featurize.lock import WriterLock
from deepfeat.featurize.segments import (
    Segment,
    new_segment_name,
    read_manifest,
    segment_dir,
    write_manifest,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "FeatureCache"]

log = logging.getLogger(__name__)

FORMAT = "deepfeat-cache"
#: Highest format version read: 1 = rows in the file, 2 = a manifest of segments.
FORMAT_VERSION = 2
#: Target size of one HDF5 chunk of the feature matrix.
CHUNK_BYTES = 1 << 20
#: Checkpoint automatically once the journal holds this many bytes.
JOURNAL_CHECKPOINT_BYTES = 256 << 20
_READ_SPAN_BYTES = 16 << 20
_SCATTER_ROWS = 512
#: Widest embedding a cache may hold; wider claims are refused as implausible (a forged
#: width would otherwise make readers allocate absurd arrays).
MAX_DIM = 1 << 16
#: HDF5 filters built into libhdf5/h5py. Any other filter would make HDF5 look for a
#: plugin library, so datasets that use one are refused before any data is read.
_BUILTIN_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit",
                    6: "scaleoffset", 32000: "lzf"}


_IS_HEX = np.zeros(256, dtype=bool)
_IS_HEX[np.frombuffer(b"0123456789abcdefABCDEF", dtype=np.uint8)] = True
_TWIN_COUNTER = itertools.count()
#: What h5py raises for a damaged file (RuntimeError too: e.g. a corrupt local heap).
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def _rows_per_chunk(dim: int, itemsize: int) -> int:
    return int(max(16, min(8192, CHUNK_BYTES // max(1, dim * itemsize))))


class _Space:
    """In-memory index of one feature space: key -> row in h5, plus journal rows."""

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
        found = self.h5_rows.lookup(keys) >= 0
        if self.j_rows:
            for i in np.flatnonzero(~found).tolist():
                found[i] = keys[i] in self.j_rows
        return found


class _JournalRecords:
    """The journal's intact records, read from disk again on every iteration."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __iter__(self) -> Iterator[Any]:
        return read_records(self.path)

    def __bool__(self) -> bool:
        return next(iter(self), None) is not None


class _ChainedRecords:
    """The intact records of several journals, in order, read from disk on every iteration."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __iter__(self) -> Iterator[Any]:
        return itertools.chain.from_iterable(read_records(p) for p in self.paths)

    def __bool__(self) -> bool:
        return next(iter(self), None) is not None


class FeatureCache:
    """An embedding cache file: read from anywhere, written by one process at a time.

    Parameters
    ----------
    path : str or path-like
        The ``.h5`` file. It need not exist yet.
    lock_timeout : float or None, default=30
        Seconds a writer waits for another writer before failing with
        :class:`~deepfeat.exceptions.CacheLockedError` (``None``: wait for ever).
    fsync : bool, default=True
        Flush each journal record to disk (protects against power loss, not only
        process death).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "c.h5")
    >>> cache = FeatureCache(path)
    >>> with cache.writer():
    ...     cache.append("space0", {"dim": 2}, ["0" * 32], np.ones((1, 2), np.float32))
    >>> feats, found = cache.read("space0", ["0" * 32, "f" * 32])
    >>> found.tolist(), feats[0].tolist()
    ([True, False], [1.0, 1.0])
    """

    def __init__(self, path: str | os.PathLike, *, lock_timeout: float | None = 30.0,
                 fsync: bool = True) -> None:
        self.path = os.fspath(path)
        self.journal_path = self.path + ".journal"
        self.lock_timeout = lock_timeout
        self.fsync = fsync
        self._lock: WriterLock | None = None
        self._jfh: Any = None
        self._jend = 0
        self._spaces: dict[str, _Space] | None = None
        self._manifest: list[Segment] | None = None  # None: the rows are in the file itself
        self._sig: tuple[int, int, int] | None = None
        self._index_lock = threading.Lock()
        self.rows_written = 0

    # ------------------------------------------------------------------ reading
    def _open_h5(self, path: str | None = None, *, segment: bool = False) -> h5py.File | None:
        """Open the cache file (or one of its segments) after checking its root attributes."""
        path = self.path if path is None else path
        if not os.path.exists(path):
            if segment:
                raise CacheCorruptError(
                    f"{self.path}: segment {os.path.basename(path)} listed by the cache is missing. "
                    f"Run `deepfeat cache verify {self.path}` / `deepfeat cache repair`."
                )
            return None
        try:
            f = h5py.File(path, "r")
        except _H5_ERRORS as exc:
            raise CacheCorruptError(
                f"{path}: not a readable HDF5 file ({exc}). "
                "Run `deepfeat cache verify` / `deepfeat cache repair`, or use another cache file."
            ) from None
        try:
            fmt = f.attrs.get("format")
            version = f.attrs.get("format_version")
        except _H5_ERRORS as exc:
            f.close()
            raise CacheCorruptError(f"{path}: unreadable root attributes ({exc})") from None
        if isinstance(fmt, bytes):
            fmt = fmt.decode("utf-8", "replace")
        if not isinstance(fmt, str) or fmt != FORMAT:
            f.close()
            raise CacheCorruptError(f"{path}: not a deepfeat cache (format attribute {fmt!r})")
        if not isinstance(version, (int, np.integer)) or int(version) > FORMAT_VERSION:
            f.close()
            raise CacheCorruptError(
                f"{path}: cache format version {version!r} is not supported "
                f"(this deepfeat reads version {FORMAT_VERSION}); upgrade deepfeat"
            )
        if segment and int(version) != 1:
            f.close()
            raise CacheCorruptError(f"{path}: a segment must be a version-1 file, not version {version!r}")
        return f

    @staticmethod
    def _space_attrs(group: h5py.Group) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        for k in group.attrs:
            try:
                v = group.attrs[k]
            except _H5_ERRORS:
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
            if isinstance(v, str) and k in ("preprocess", "versions"):
                try:
                    v = json.loads(v)
                except ValueError:
                    pass
            attrs[k] = v
        return attrs

    def _validate_space(self, name: str, group: Any,
                        path: str | None = None) -> tuple[h5py.Dataset, h5py.Dataset]:
        where = f"{path or self.path}: feature space {name!r}"
        if not isinstance(group, h5py.Group) or "keys" not in group or "features" not in group:
            raise CacheCorruptError(f"{where} lacks its 'keys' or 'features' dataset")
        for member in ("keys", "features"):
            _require_hard_link(group, member, where)
        keys, feats = group["keys"], group["features"]
        if not isinstance(keys, h5py.Dataset) or keys.dtype != np.dtype(f"S{KEY_LENGTH}") or keys.ndim != 1:
            raise CacheCorruptError(f"{where}: 'keys' must be a 1-D |S{KEY_LENGTH} dataset")
        if not isinstance(feats, h5py.Dataset) or feats.ndim != 2 or str(feats.dtype) not in ALLOWED_DTYPES:
            raise CacheCorruptError(f"{where}: 'features' must be a 2-D float16/float32 dataset")
        if feats.shape[0] != keys.shape[0]:
            raise CacheCorruptError(
                f"{where}: {keys.shape[0]} keys but {feats.shape[0]} feature rows"
            )
        if feats.shape[1] > MAX_DIM:
            raise CacheCorruptError(f"{where}: feature width {feats.shape[1]:,} exceeds {MAX_DIM:,}")
        for ds in (keys, feats):
            _check_dataset_storage(ds, where)
        return keys, feats

    def _iter_space_groups(self, f: h5py.File) -> Iterator[tuple[str, h5py.Group]]:
        """Yield ``(name, group)`` under /spaces; soft and external links are refused."""
        if "spaces" not in f:
            return
        spaces = _require_hard_link(f, "spaces", self.path)
        if not isinstance(spaces, h5py.Group):
            raise CacheCorruptError(f"{self.path}: /spaces is not a group")
        for name in spaces:  # iterating names does not follow links
            yield name, _require_hard_link(spaces, name, self.path)

    def _load_index(self) -> dict[str, _Space]:
        spaces: dict[str, _Space] = {}
        # Journal first, then the .h5 file: a checkpoint in between cannot hide rows.
        for rec in read_records(self.journal_path):
            sp = spaces.get(rec.space)
            if sp is None:
                sp = spaces[rec.space] = _Space(rec.attrs, rec.features.shape[1], str(rec.features.dtype))
            sp.j_rows.update(rec.keys)
        # Built in locals and published at the end: threads reading one cache may load its
        # index at the same time, and none may see another's half-read manifest.
        manifest: list[Segment] | None = None
        sig = _file_sig(self.path)
        raws: dict[str, list[np.ndarray]] = {}
        f = self._open_h5()
        if f is not None:
            with f, _reading(self.path):
                if int(f.attrs["format_version"]) >= 2:
                    manifest = read_manifest(f, self.path)
                else:
                    self._load_file(f, self.path, spaces, raws, None)
        for seg in manifest or ():
            path = os.path.join(segment_dir(self.path), seg.file)
            g = self._open_h5(path, segment=True)
            with g, _reading(path):
                self._load_file(g, path, spaces, raws, seg)
        for name, parts in raws.items():
            sp = spaces[name]
            sp.h5_rows = KeyIndex(np.concatenate(parts) if len(parts) > 1 else parts[0])
            sp.starts = np.concatenate([[0], np.cumsum([n for _, n in sp.parts])]).astype(np.int64)
        self._manifest, self._sig = manifest, sig
        return spaces

    def _load_file(self, f: h5py.File, path: str, spaces: dict[str, _Space],
                   raws: dict[str, list[np.ndarray]], seg: Segment | None) -> None:
        """Index the rows of one file (the cache itself, or a segment ``seg`` of it)."""
        for name, group in self._iter_space_groups(f):
            keys, feats = self._validate_space(name, group, path)
            if seg is not None and keys.shape[0] != seg.rows.get(name, 0):
                raise CacheCorruptError(
                    f"{self.path}: segment {seg.file} holds {keys.shape[0]} rows of space {name!r}, "
                    f"its manifest says {seg.rows.get(name, 0)}"
                )
            attrs = self._space_attrs(group)
            sp = spaces.get(name)
            if sp is None:
                sp = spaces[name] = _Space(attrs, feats.shape[1], str(feats.dtype))
            else:
                if not sp.parts:
                    sp.attrs = attrs
                if sp.dim != feats.shape[1]:
                    raise CacheCorruptError(
                        f"{path}: space {name!r} has width {feats.shape[1]} here "
                        f"but {sp.dim} in the journal or another segment"
                    )
            raw = keys[...]
            if not _IS_HEX[np.ascontiguousarray(raw).view(np.uint8)].all():
                raise CacheCorruptError(
                    f"{path}: feature space {name!r} has keys that are not hex digests"
                )
            if len(raw):
                raws.setdefault(name, []).append(raw)
                sp.parts.append((path, len(raw)))

    @property
    def _index(self) -> dict[str, _Space]:
        if self._spaces is None:
            with self._index_lock:  # one load, not one per thread that asks at once
                if self._spaces is None:
                    self._spaces = self._load_index()
        return self._spaces

    def refresh(self) -> None:
        """Forget the in-memory index so the next call re-reads the file."""
        self._spaces = None

    def spaces(self) -> dict[str, dict[str, Any]]:
        """Feature spaces in the cache: fingerprint -> attributes (with ``rows``)."""
        return {name: {**sp.attrs, "rows": len(sp)} for name, sp in self._index.items()}

    def space_info(self, space: str) -> dict[str, Any] | None:
        sp = self._index.get(space)
        return None if sp is None else {**sp.attrs, "rows": len(sp), "dim": sp.dim, "dtype": sp.dtype}

    def contains(self, space: str, keys: Sequence[str]) -> np.ndarray:
        """Boolean mask: which ``keys`` have a row in ``space``."""
        sp = self._index.get(space)
        if sp is None:
            return np.zeros(len(keys), dtype=bool)
        return sp.contains(keys)

    def read(
        self, space: str, keys: Sequence[str], *, dtype: npt.DTypeLike = np.float32
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read rows aligned with ``keys``.

        Parameters
        ----------
        space : str
            Feature-space fingerprint.
        keys : sequence of str
            Content hashes, in the order wanted; repeats and absent keys are allowed.
        dtype : dtype, default float32
            Floating dtype of the result. ``None`` keeps the stored dtype (float16 caches
            then read at half the memory, with no widening pass).

        Returns
        -------
        features : ndarray of shape (len(keys), dim)
            NaN rows where a key is absent.
        found : ndarray of bool
        """
        return self._read(space, keys, dtype)

    def _journal_rows(self, space: str, wanted: set[str]) -> dict[str, np.ndarray]:
        """Rows of ``wanted`` keys still in the journal (first occurrence), one record at a time."""
        got: dict[str, np.ndarray] = {}
        for rec in read_records(self.journal_path):
            if rec.space != space:
                continue
            for i, k in enumerate(rec.keys):
                if k in wanted and k not in got:
                    got[k] = rec.features[i].astype(np.float32)
            if len(got) == len(wanted):
                break
        return got

    def _read(
        self, space: str, keys: Sequence[str], dtype: npt.DTypeLike, _retried: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        sp = self._index.get(space)
        n = len(keys)
        out_dtype = np.dtype(sp.dtype if (dtype is None and sp is not None) else (dtype or np.float32))
        if out_dtype.kind != "f":
            raise ValueError(f"dtype must be a floating dtype, got {out_dtype}")
        if sp is None:
            return np.full((n, 0), np.nan, out_dtype), np.zeros(n, bool)
        out = np.empty((n, sp.dim), dtype=out_dtype)
        rows = sp.h5_rows.lookup(keys)
        found = rows >= 0
        in_journal: dict[str, list[int]] = {}
        if sp.j_rows:
            for i in np.flatnonzero(~found).tolist():
                k = keys[i]
                if k in sp.j_rows:
                    in_journal.setdefault(k, []).append(i)
        if in_journal:
            got = self._journal_rows(space, set(in_journal))
            if len(got) < len(in_journal) and not _retried:
                # another writer folded the journal into the file since the index was read
                self.refresh()
                return self._read(space, keys, dtype, _retried=True)
            for k, where in in_journal.items():
                row = got.get(k)
                if row is not None:
                    out[where] = row
                    found[where] = True
        sel = np.flatnonzero(rows >= 0)
        out[~found] = np.nan
        if sel.size:
            part = np.searchsorted(sp.starts, rows[sel], side="right") - 1
            for p in np.unique(part).tolist():
                file = sp.parts[p][0]
                if not _retried and (
                    not os.path.exists(file) or (file == self.path and _file_sig(file) != self._sig)
                ):
                    # a writer replaced the file or compacted the segments since the index was read
                    self.refresh()
                    return self._read(space, keys, dtype, _retried=True)
                f = self._open_h5(file, segment=file != self.path)
                if f is None:
                    raise CacheCorruptError(f"{self.path}: the cache file disappeared while being read")
                at = part == p
                with f, _reading(file):
                    ds = f["spaces"][space]["features"]
                    self._read_rows_into(ds, rows[sel][at] - sp.starts[p], out, sel[at])
        return out, found

    @staticmethod
    def _read_rows_into(ds: h5py.Dataset, rows: np.ndarray, out: np.ndarray, pos: np.ndarray) -> None:
        """``out[pos] = ds[rows]`` for rows in any order, reading the file sequentially.

        The wanted rows are sorted; each span of whole chunks that holds some of them
        (at most ``_READ_SPAN_BYTES``) is read once into one of two reused buffers, and
        its rows are gathered, cast to ``out``'s dtype and scattered to their places with
        PyTorch's kernels (several times faster than NumPy's float16 casts) on a second
        thread while the next span is read: file reading holds the GIL, the PyTorch
        kernels release it, so the two overlap on two cores.
        """
        import torch

        order = np.argsort(rows, kind="stable")
        rows, pos = rows[order], np.asarray(pos)[order]
        n_rows, dim = ds.shape
        chunk = ds.chunks[0] if ds.chunks else 4096
        span_rows = max(chunk, (_READ_SPAN_BYTES // max(1, dim * ds.dtype.itemsize)) // chunk * chunk)
        span_rows = min(span_rows, n_rows)
        dst = torch.from_numpy(out)
        rows_t, pos_t = torch.from_numpy(rows), torch.from_numpy(pos.astype(np.int64, copy=False))

        def scatter(src: torch.Tensor, i: int, j: int, start: int) -> None:
            for a in range(i, j, _SCATTER_ROWS):
                b = min(j, a + _SCATTER_ROWS)
                lo, hi = int(rows[a]), int(rows[b - 1])
                if hi - lo == b - a - 1:
                    # the block is a run of consecutive rows, each wanted once (the usual case
                    # when most of a space is read): scatter straight from the buffer
                    block = src[lo - start : hi - start + 1]
                else:
                    block = src.index_select(0, rows_t[a:b] - start)
                dst.index_copy_(0, pos_t[a:b], block.to(dst.dtype))

        spans = []
        i = 0
        while i < rows.size:
            start = int(rows[i]) // chunk * chunk
            j = int(np.searchsorted(rows, min(start + span_rows, n_rows), side="left"))
            stop = min(n_rows, (int(rows[j - 1]) // chunk + 1) * chunk)  # up to the last needed chunk
            spans.append((i, j, start, stop))
            i = j
        bufs = [np.empty((span_rows, dim), dtype=ds.dtype) for _ in range(min(2, len(spans)))]
        if len(spans) == 1:
            i, j, start, stop = spans[0]
            ds.read_direct(bufs[0], np.s_[start:stop], np.s_[0 : stop - start])
            scatter(torch.from_numpy(bufs[0]), i, j, start)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="deepfeat-read") as pool:
            pending = None
            for n, (i, j, start, stop) in enumerate(spans):
                buf = bufs[n % 2]  # the buffer the scatter before last used: finished below
                ds.read_direct(buf, np.s_[start:stop], np.s_[0 : stop - start])
                if pending is not None:
                    pending.result()
                pending = pool.submit(scatter, torch.from_numpy(buf), i, j, start)
            pending.result()

    def iter_space(self, space: str, batch_rows: int = 65536) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(keys, features)`` blocks of a space (file rows, then journal rows)."""
        in_file: set[str] = set()
        sp = self._index.get(space)
        for file, _ in list(sp.parts) if sp is not None else ():
            f = self._open_h5(file, segment=file != self.path)
            if f is None:
                continue
            with f, _reading(file):
                grp = dict(self._iter_space_groups(f)).get(space)
                if grp is not None:
                    keys, feats = self._validate_space(space, grp, file)
                    for s in range(0, keys.shape[0], batch_rows):
                        block = [k.decode() for k in keys[s : s + batch_rows]]
                        take = [i for i, k in enumerate(block) if k not in in_file]
                        in_file.update(block)
                        if not take:
                            continue
                        rows = feats[s : s + batch_rows].astype(np.float32)
                        if len(take) < len(block):  # a key another segment holds already
                            block, rows = [block[i] for i in take], rows[take]
                        yield block, rows
        if sp is not None:
            # journal rows not in the file as read just now (a writer may have folded some in)
            extra = sp.j_rows - in_file
            if extra:
                rows = self._journal_rows(space, extra)
                order = list(rows)
                for s in range(0, len(order), batch_rows):
                    block = order[s : s + batch_rows]
                    yield block, np.stack([rows[k] for k in block])

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def writer(self) -> Iterator[FeatureCache]:
        """Hold the writer lock; recover a crashed run's journal; checkpoint on exit."""
        if self._lock is not None:  # re-entrant
            yield self
            return
        d = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(d):
            raise CacheError(f"{self.path}: folder {d} does not exist")
        self._lock = WriterLock(self.path, self.lock_timeout).acquire()
        try:
            kill_point("writer.locked")
            self.refresh()
            self._cleanup_tmp()  # (reads and validates the index before writing anything)
            self.checkpoint()  # fold in what a killed run left in the journal
            yield self
            self.checkpoint()
        finally:
            if self._jfh is not None:
                with contextlib.suppress(OSError):  # e.g. a full disk: never keep the lock
                    self._jfh.close()
                self._jfh = None
            with contextlib.suppress(OSError):
                if os.path.getsize(self.journal_path) == 0:
                    os.remove(self.journal_path)  # an empty journal is just clutter
            self._lock.release()
            self._lock = None

    def segments(self) -> list[str]:
        """Files holding the cache's rows: the segments, or the cache file itself."""
        self._index  # noqa: B018  (reads the manifest)
        if self._manifest is None:
            return [self.path] if os.path.exists(self.path) else []
        return [os.path.join(segment_dir(self.path), s.file) for s in self._manifest]

    def compact(self) -> dict[str, Any]:
        """Merge every segment (and the journal) into one self-contained file.

        Reads and writes the whole cache once; afterwards the cache is one version-1 file
        again, readable by any deepfeat and by plain h5py without its segment folder.
        Readers that hold the old segments open keep reading them; writers wait.

        Returns
        -------
        dict
            ``segments_before``, ``rows`` (rows kept), ``bytes`` (size of the new file).

        Examples
        --------
        >>> import numpy as np, tempfile, os
        >>> cache = FeatureCache(os.path.join(tempfile.mkdtemp(), "c.h5"))
        >>> for i in range(3):
        ...     with cache.writer():
        ...         cache.append("s", {}, [f"{i:032x}"], np.ones((1, 2), np.float32))
        >>> len(cache.segments()), cache.compact()["segments_before"], len(cache.segments())
        (3, 3, 1)
        """
        with self.writer(), self._commit_lock():
            self.refresh()
            index = self._index
            old = list(self._manifest or ())
            before = len(old) if self._manifest is not None else int(os.path.exists(self.path))
            if self._manifest is None:
                return {"segments_before": before, "rows": sum(len(sp) for sp in index.values()),
                        "bytes": os.path.getsize(self.path) if before else 0}
            with _replacing(self.path) as tmp:
                _check_free_space(self.path, sum(os.path.getsize(p) for p in self.segments()))
                added, grown, _ = self._write_twin(tmp, self._stored_records(index))
                _read_back(tmp, grown)
            folder = segment_dir(self.path)
            for seg in old:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, seg.file))
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty (pending journals of other writers stay)
            self.refresh()
            return {"segments_before": before, "rows": added, "bytes": os.path.getsize(self.path)}

    def _stored_records(self, index: dict[str, _Space], batch_rows: int = 65536) -> Iterator[Any]:
        """Every stored row once (the first of each key), as records in the stored dtype."""
        from deepfeat.featurize.journal import JournalRecord

        for name, sp in index.items():
            for p, (file, _) in enumerate(sp.parts):
                with self._open_h5(file, segment=file != self.path) as f, _reading(file):
                    keys, feats = self._validate_space(name, f["spaces"][name], file)
                    for s in range(0, keys.shape[0], batch_rows):
                        raw = keys[s : s + batch_rows]
                        block = [k.decode("ascii") for k in raw]
                        first = sp.h5_rows.lookup(block) == sp.starts[p] + s + np.arange(len(block))
                        if first.any():
                            rows = feats[s : s + batch_rows][first]
                            yield JournalRecord(name, sp.attrs, [k for k, f_ in zip(block, first) if f_], rows, 0)

    def fold_pending(self) -> bool:
        """Fold rows that a killed run left in the journal into the ``.h5`` file, if possible.

        For runs that compute nothing (and so never take the writer lock): afterwards plain
        ``h5py`` sees every row. Never waits for another writer (it will fold them itself)
        and never fails: a read-only folder or a full disk leaves the rows in the journal,
        where :class:`FeatureCache` reads them anyway. Returns whether a fold happened.
        """
        if self._lock is not None:
            return False
        try:
            if os.path.getsize(self.journal_path) == 0:
                return False
        except OSError:
            return False
        timeout, self.lock_timeout = self.lock_timeout, 0
        try:
            with self.writer():
                pass
        except CacheCorruptError:
            raise
        except (CacheError, OSError) as exc:
            log.info("%s: journal rows not folded in now (%s)", self.path, exc)
            return False
        finally:
            self.lock_timeout = timeout
        return True

    def _cleanup_tmp(self) -> None:
        """Remove what killed commits left: temporary files and segments no manifest lists."""
        with self._commit_lock():
            for tmp in glob.glob(glob.escape(self.path) + ".tmp-*"):
                with contextlib.suppress(OSError):
                    os.remove(tmp)
            self._index  # noqa: B018  (reads the manifest)
            folder = segment_dir(self.path)
            if not os.path.isdir(folder):
                return
            listed = {s.file for s in self._manifest or ()}
            for name in os.listdir(folder):
                if ".tmp-" in name or (name.endswith(".h5") and name not in listed):
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(folder, name))

    def _commit_lock(self) -> WriterLock:
        """The lock held while a segment is written and committed (briefly, by any writer)."""
        return WriterLock(self.path + ".commit", self.lock_timeout)

    def append(self, space: str, attrs: dict[str, Any], keys: Sequence[str], features: np.ndarray) -> None:
        """Durably add rows to ``space`` (journal first; see the module docstring)."""
        if self._lock is None:
            raise CacheError("FeatureCache.append needs the writer lock: use `with cache.writer():`")
        features = np.asarray(features)
        if features.ndim != 2 or len(keys) != features.shape[0]:
            raise ValueError("features must be (len(keys), dim)")
        sp = self._index.get(space)
        if sp is not None and sp.dim != features.shape[1]:
            raise CacheError(f"{self.path}: space {space!r} has width {sp.dim}, got rows of width {features.shape[1]}")
        if sp is not None:
            features = features.astype(sp.dtype, copy=False)
        if str(features.dtype) not in ALLOWED_DTYPES:
            features = features.astype(np.float32)
        record = encode_record(space, attrs, list(keys), features)
        if self._jfh is None:
            # Unbuffered: a failed write leaves nothing in a buffer that a later flush or
            # close could still push to disk behind the truncation below.
            self._jfh = open(self.journal_path, "ab", buffering=0)
            self._jend = self._jfh.tell()
            kill_point("journal.opened")
        kill_point("journal.torn", lambda: (self._jfh.write(record[: len(record) // 2]), os.fsync(self._jfh.fileno())))
        try:
            append_record(self._jfh, record, fsync=self.fsync)
        except OSError as exc:
            # Drop the partial record so later appends are not hidden behind it.
            with contextlib.suppress(OSError):
                os.ftruncate(self._jfh.fileno(), self._jend)
                self._jfh.seek(self._jend)
            raise CacheError(
                f"{self.journal_path}: cannot write ({exc.strerror or exc}); the rows written "
                "before this batch are kept. Free disk space and run again to resume."
            ) from exc
        self._jend += len(record)
        kill_point("journal.appended")
        if sp is None:
            sp = self._index[space] = _Space(attrs, features.shape[1], str(features.dtype))
        sp.j_rows.update(keys)
        self.rows_written += len(keys)
        if self._jend >= JOURNAL_CHECKPOINT_BYTES:
            self.checkpoint()

    def checkpoint(self) -> int:
        """Fold the journal into a new segment of the cache atomically; return rows added."""
        if self._lock is None:
            raise CacheError("checkpoint needs the writer lock")
        records = _JournalRecords(self.journal_path)  # re-read per pass: one record in memory
        if not records:
            self._truncate_journal()
            return 0
        added = self._commit(records, "j", self.journal_path)
        self._truncate_journal()
        kill_point("checkpoint.done")
        return added

    def fold_journals(self, journals: Sequence[str], kind: str = "w") -> int:
        """Commit the intact records of other writers' journals as one new segment.

        Many processes may each write rows to a journal of their own (e.g. one per Ray
        actor, with :func:`~deepfeat.featurize.journal.append_record`), with no lock on the
        cache; this folds them in. Rows the cache already holds are skipped, so a journal
        folded twice, or two journals holding the same key, never add a row twice. The
        journals are left in place: delete them once this returns.

        Parameters
        ----------
        journals : sequence of str
            Journal files, in order of precedence.
        kind : str, default="w"
            Prefix of the new segment's file name.

        Returns
        -------
        int
            Rows added.
        """
        records = _ChainedRecords([os.fspath(j) for j in journals])
        if not records:
            return 0
        return self._commit(records, kind, ", ".join(map(os.fspath, journals)))

    def _commit(self, records: Iterable[Any], kind: str, source: str) -> int:
        """Write ``records``' new rows to a new segment and commit it; return rows added."""
        kill_point("checkpoint.begin")
        with self._commit_lock():
            if self._spaces is not None and _file_sig(self.path) != self._sig:
                self.refresh()  # another writer committed since the index was read
            index = self._index
            fresh = not os.path.exists(self.path)
            folder = segment_dir(self.path)
            name = new_segment_name(kind)
            # A new cache is written as one plain file; later rows go to new segments.
            tmp = (f"{self.path}.tmp-{os.getpid()}-{next(_TWIN_COUNTER)}" if fresh
                   else os.path.join(folder, f"{name[:-3]}.tmp-{os.getpid()}"))
            try:
                # HDF5 copes badly with a full disk (errors surface late, from destructors), so
                # make sure the segment fits before starting it.
                _check_free_space(self.path, self._bytes_needed(records))
                if not fresh:
                    os.makedirs(folder, exist_ok=True)
                kill_point("checkpoint.copied")
                sizes: dict[str, int] = {}
                for rec in records:  # small segments get small chunks: bytes follow the rows
                    sizes[rec.space] = sizes.get(rec.space, 0) + len(rec.keys)
                added, grown, meta = self._write_twin(tmp, records, index, sizes)
                kill_point("checkpoint.written")
                if added:
                    _read_back(tmp, grown)  # HDF5 may report a failed write only when an id is freed
                    with open(tmp, "rb+") as fh:
                        os.fsync(fh.fileno())
                    if fresh:
                        os.replace(tmp, self.path)
                        _fsync_dir(self.path)
                    else:
                        os.replace(tmp, os.path.join(folder, name))
                        _fsync_dir(os.path.join(folder, name))
                        kill_point("checkpoint.segment")
                        rows = {sp: m[3] for sp, m in meta.items() if m[3]}
                        self._write_manifest(index, Segment(name, rows), meta)
                else:
                    os.remove(tmp)
            except BaseException as exc:
                # Free the HDF5 objects of the failed twin now: left to the garbage collector,
                # ids of a file whose close failed can crash the interpreter.
                _clear_frames(exc)
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                if isinstance(exc, CacheError) or not isinstance(exc, (OSError, RuntimeError)):
                    raise
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                reason = " ".join(str(reason).split())  # HDF5 messages span lines; keep it one line
                raise CacheError(
                    f"{self.path}: checkpoint failed ({reason}); the new rows are safe in "
                    f"{source}. Free disk space and run again."
                ) from None
            kill_point("checkpoint.replaced")
            self.refresh()
        log.debug("%s: committed %d rows", self.path, added)
        return added

    def _write_manifest(self, index: dict[str, _Space], new: Segment,
                        meta: dict[str, tuple[dict[str, Any], int, str, int]]) -> None:
        """Atomically replace the cache file by a manifest listing its segments and ``new``."""
        folder = segment_dir(self.path)
        segments = list(self._manifest) if self._manifest is not None else None
        if segments is None:
            # The file holds rows itself (version 1): it becomes the first segment, by a
            # hard link (no copy); the new manifest then replaces the name.
            base = new_segment_name("base")
            rows = {name: sum(n for f, n in sp.parts if f == self.path) for name, sp in index.items()}
            _link_or_copy(self.path, os.path.join(folder, base))
            _fsync_dir(os.path.join(folder, base))
            kill_point("checkpoint.linked")
            segments = [Segment(base, {k: v for k, v in rows.items() if v})]
        segments.append(new)
        spaces: dict[str, tuple[dict[str, Any], int, str]] = {}
        for name, sp in index.items():
            if sp.parts:
                spaces[name] = (sp.attrs, sp.dim, sp.dtype)
        for name, (attrs, dim, dtype, n) in meta.items():
            if n and name not in spaces:
                spaces[name] = (attrs, dim, dtype)
        with _replacing(self.path) as tmp:
            write_manifest(tmp, self.path, segments, spaces, FORMAT)

    def _write_twin(self, tmp: str, records: Iterable[Any], known: dict[str, _Space] | None = None,
                    sizes: dict[str, int] | None = None) -> tuple[int, dict[str, int], dict[str, tuple[dict[str, Any], int, str, int]]]:
        """Write the records' rows that ``known`` lacks to a new file ``tmp``.

        Returns rows added, the first new row per space, and per space (attributes, dim,
        dtype, rows added).
        """
        added = 0
        grown: dict[str, int] = {}
        meta: dict[str, tuple[dict[str, Any], int, str, int]] = {}
        with h5py.File(tmp, "a") as f:
            if "format" not in f.attrs:
                f.attrs["format"] = FORMAT
                f.attrs["format_version"] = 1
            try:
                spaces = f.require_group("spaces")
                present: dict[str, set[str]] = {}
                for rec in records:
                    n = self._merge(spaces, rec, present, grown, known, (sizes or {}).get(rec.space))
                    added += n
                    a, d, t, m = meta.get(rec.space, (None, 0, "", 0))
                    if a is None:
                        g = spaces[rec.space]
                        a = self._space_attrs(g)
                        d, t = int(g["features"].shape[1]), str(g["features"].dtype)
                    meta[rec.space] = (a, d, t, m + n)
                    kill_point("checkpoint.merged")
                f.flush()
            except BaseException as exc:
                # Release the datasets while the file is still open: freeing them after
                # a close that failed (e.g. on a full disk) can crash HDF5.
                spaces = None
                _clear_frames(exc)
                raise
        return added, grown, meta

    def _bytes_needed(self, records: Iterable[Any]) -> int:
        """Generous estimate of the free space a checkpoint of ``records`` needs."""
        need = 0  # a segment holds only the new rows: the cache is never copied
        spaces: dict[str, tuple[int, int, int]] = {}
        for rec in records:
            n, dim = rec.features.shape
            rows, _, size = spaces.get(rec.space, (0, dim, rec.features.dtype.itemsize))
            spaces[rec.space] = (rows + n, dim, size)
        for rows, dim, size in spaces.values():
            chunk = _rows_per_chunk(dim, size) * dim * size
            need += rows * (dim * size + KEY_LENGTH) + 2 * chunk + 2 * 4096 * KEY_LENGTH
        return need + (1 << 20)

    def _merge(self, spaces: h5py.Group, rec: Any, present: dict[str, set[str]],
               grown: dict[str, int] | None = None, known: dict[str, _Space] | None = None,
               expect: int | None = None) -> int:
        n, dim = rec.features.shape
        if rec.space not in spaces:
            grp = spaces.create_group(rec.space)
            for k, v in rec.attrs.items():
                grp.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else v)
            grp.attrs["dim"] = dim
            grp.attrs["dtype"] = str(rec.features.dtype)
            grp.attrs.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            cr = _rows_per_chunk(dim, rec.features.dtype.itemsize)
            kr = 4096
            if expect:  # a segment of known size: chunks no larger than it
                cr, kr = min(cr, max(16, expect)), min(kr, max(16, expect))
            # fletcher32: every chunk carries a checksum, so damaged rows fail to read
            # (CacheCorruptError) instead of coming back as silently wrong numbers.
            grp.create_dataset("keys", shape=(0,), maxshape=(None,), dtype=f"S{KEY_LENGTH}", chunks=(kr,),
                               fletcher32=True)
            grp.create_dataset("features", shape=(0, dim), maxshape=(None, dim),
                               dtype=rec.features.dtype, chunks=(cr, dim), fletcher32=True)
        grp = spaces[rec.space]
        keys_ds, feats_ds = self._validate_space(rec.space, grp)
        if feats_ds.shape[1] != dim:
            raise CacheCorruptError(f"{self.path}: journal rows of width {dim} for a space of width {feats_ds.shape[1]}")
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
        if grown is not None:
            grown.setdefault(rec.space, start)
        keys_ds.resize((start + len(take),))
        feats_ds.resize((start + len(take), dim))
        kill_point("checkpoint.resized")
        keys_ds[start:] = np.array([rec.keys[i] for i in take], dtype=f"S{KEY_LENGTH}")
        feats_ds[start:] = rec.features[take].astype(feats_ds.dtype)
        keys_ds.flush()  # surface write errors (a full disk) here, not in a destructor
        feats_ds.flush()
        return len(take)

    def _truncate_journal(self) -> None:
        if self._jfh is not None:
            self._jfh.truncate(0)
            self._jfh.seek(0)
            self._jend = 0
        elif os.path.exists(self.journal_path):
            os.truncate(self.journal_path, 0)

    def __repr__(self) -> str:
        return f"FeatureCache({self.path!r})"


def _file_sig(path: str) -> tuple[int, int, int] | None:
    """Identity of a file's current version (a replaced file has another inode)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@contextlib.contextmanager
def _replacing(dst: str) -> Iterator[str]:
    """A temporary name beside ``dst``: what the block writes there is fsynced and then
    atomically replaces ``dst`` (its folder fsynced too); on any error the temporary file
    is removed and ``dst`` is left as it was."""
    tmp = f"{dst}.tmp-{os.getpid()}-{next(_TWIN_COUNTER)}"
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(dst)


def _link_or_copy(src: str, dst: str) -> None:
    """Give ``src``'s content a second name: a hard link, or a copy where links are refused."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EACCES):
            raise
        log.info("%s: hard links refused (%s); copying the file once", dst, exc.strerror)
        tmp = dst + f".tmp-{os.getpid()}"
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dst)


def _clear_frames(exc: BaseException | None) -> None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def _check_free_space(path: str, need: int) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device: the checkpoint needs about {need / 1e6:.1f} MB in {folder}, "
            f"{free / 1e6:.1f} MB are free",
        )


def _read_back(path: str, grown: dict[str, int]) -> None:
    """Re-read the rows a checkpoint added (checksums verified) before it may replace the file."""
    try:
        with h5py.File(path, "r") as f:
            for space, start in grown.items():
                g = f["spaces"][space]
                n = g["keys"].shape[0]
                if g["features"].shape[0] != n:
                    raise OSError(f"space {space!r}: {n} keys but {g['features'].shape[0]} rows written")
                g["keys"][start:n]
                g["features"][start:n]
    except _H5_ERRORS as exc:
        raise OSError(f"the rows just written do not read back ({exc})") from exc


def _require_hard_link(group: h5py.Group, name: str, where: str) -> Any:
    """``group[name]``, refusing soft and external links (a cache is one self-contained file)."""
    try:
        link = group.get(name, getlink=True)
    except _H5_ERRORS as exc:
        raise CacheCorruptError(f"{where}: unreadable entry {name!r} ({exc})") from None
    if not isinstance(link, h5py.HardLink):
        raise CacheCorruptError(
            f"{where}: {group.name.rstrip('/')}/{name} is a {type(link).__name__}; a cache holds "
            "only plain groups and datasets (links to other paths or files are refused)"
        )
    try:
        return group[name]
    except _H5_ERRORS as exc:
        raise CacheCorruptError(f"{where}: unreadable entry {name!r} ({exc})") from None


def _check_dataset_storage(ds: h5py.Dataset, where: str) -> None:
    """Refuse plugin filters and sizes the file cannot back (truncated or forged shapes)."""
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    unknown = [fid for fid in filters if fid not in _BUILTIN_FILTERS]
    if unknown:
        raise CacheCorruptError(f"{where}: {ds.name} uses HDF5 filter(s) {unknown} that need a plugin; refused")
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


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    """Turn HDF5 read errors (bad checksums, damaged metadata) into CacheCorruptError."""
    try:
        yield
    except _H5_ERRORS as exc:
        if isinstance(exc, CacheError):
            raise
        raise CacheCorruptError(
            f"{path}: damaged cache file ({exc}). Run `deepfeat cache verify {path}`, then "
            f"`deepfeat cache repair {path} --out NEW.h5` to salvage the intact rows."
        ) from None


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
