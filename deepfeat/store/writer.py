"""Writing a cache: :class:`FeatureCache`, the reader that also adds rows, commits and compacts.

Crash safety: new rows go to an append-only checksummed journal (``<file>.journal``,
:mod:`deepfeat.store.journal`). A *checkpoint* writes the journal's rows that the cache
lacks into a new segment file, flushes it to disk, renames it into the segment folder,
then atomically replaces the manifest (the ``.h5`` file) with one that lists it, and only
then empties the journal. Its cost is proportional to the rows it adds, not to the size
of the cache. A process killed at any moment therefore leaves the old manifest and
segments intact plus a journal whose damaged tail is ignored; the next writer merges the
intact records in. One writer at a time holds ``<file>.lock``
(:class:`~deepfeat.store.lock.WriterLock`) for the journal; committing a segment takes
``<file>.commit.lock`` for the moment of the commit only, so other writers
(:meth:`FeatureCache.merge_journals`) can add segments meanwhile.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from deepfeat.exceptions import CacheCorruptError, CacheError
from deepfeat.faults import kill_point
from deepfeat.store import atomic
from deepfeat.store.compaction import remove_segments, write_compacted
from deepfeat.store.format import (
    ALLOWED_DTYPES,
    COMMIT_LOCK_SUFFIX,
    FORMAT,
    JOURNAL_CHECKPOINT_BYTES,
)
from deepfeat.store.index import CacheIndex, SpaceIndex
from deepfeat.store.journal import JournalRecord, JournalRecords, JournalWriter
from deepfeat.store.lock import WriterLock
from deepfeat.store.reader import CacheReader
from deepfeat.store.rows_file import SpaceMeta, bytes_needed, read_back, write_rows_file
from deepfeat.store.segments import Segment, new_segment_name, segment_dir, write_manifest

__all__ = ["FeatureCache"]

log = logging.getLogger(__name__)


class FeatureCache(CacheReader):
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

    #: Checkpoint automatically once the journal holds this many bytes.
    checkpoint_bytes = JOURNAL_CHECKPOINT_BYTES

    def __init__(self, path: str | os.PathLike, *, lock_timeout: float | None = 30.0,
                 fsync: bool = True) -> None:
        super().__init__(path)
        self.lock_timeout = lock_timeout
        self.fsync = fsync
        self._lock: WriterLock | None = None
        self._journal: JournalWriter | None = None
        self.rows_written = 0

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
            self.checkpoint()  # merge in what a killed run left in the journal
            yield self
            self.checkpoint()
        finally:
            if self._journal is not None:
                with contextlib.suppress(OSError):  # e.g. a full disk: never keep the lock
                    self._journal.close()
                self._journal = None
            with contextlib.suppress(OSError):
                if os.path.getsize(self.journal_path) == 0:
                    os.remove(self.journal_path)  # an empty journal is just clutter
            self._lock.release()
            self._lock = None

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
        if self._journal is None:
            self._journal = JournalWriter(self.journal_path, fsync=self.fsync)
        self._journal.append(space, attrs, keys, features)
        if sp is None:
            sp = self._index[space] = SpaceIndex(attrs, features.shape[1], str(features.dtype))
        sp.j_rows.update(keys)
        self.rows_written += len(keys)
        if self._journal.size >= self.checkpoint_bytes:
            self.checkpoint()

    def checkpoint(self) -> int:
        """Merge the journal into a new segment of the cache atomically; return rows added."""
        if self._lock is None:
            raise CacheError("checkpoint needs the writer lock")
        records = JournalRecords([self.journal_path])  # re-read per pass: one record in memory
        if not records:
            self._truncate_journal()
            return 0
        added = self._commit(records, "j", self.journal_path)
        self._truncate_journal()
        kill_point("checkpoint.done")
        return added

    def merge_journals(self, journals: Sequence[str | os.PathLike], kind: str = "w") -> int:
        """Commit the intact records of other writers' journals as one new segment.

        Many processes may each write rows to a journal of their own (e.g. one per Ray
        actor, with :class:`~deepfeat.store.journal.JournalWriter`), with no lock on the
        cache; this merges them in. Rows the cache already holds are skipped, so a journal
        merged twice, or two journals holding the same key, never add a row twice. The
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
        records = JournalRecords([os.fspath(j) for j in journals])
        if not records:
            return 0
        return self._commit(records, kind, ", ".join(records.paths))

    def merge_pending(self) -> bool:
        """Merge rows that a killed run left in the journal into the ``.h5`` file, if possible.

        For runs that compute nothing (and so never take the writer lock): afterwards plain
        ``h5py`` sees every row. Never waits for another writer (it will merge them itself)
        and never fails: a read-only folder or a full disk leaves the rows in the journal,
        where :class:`FeatureCache` reads them anyway. Returns whether a merge happened.
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
            log.info("%s: journal rows not merged in now (%s)", self.path, exc)
            return False
        finally:
            self.lock_timeout = timeout
        return True

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
            added = write_compacted(self.path, index, self.segments())
            remove_segments(self.path, old)
            self.refresh()
            return {"segments_before": before, "rows": added, "bytes": os.path.getsize(self.path)}

    # ------------------------------------------------------------------ committing
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
        return WriterLock(self.path + COMMIT_LOCK_SUFFIX, self.lock_timeout)

    def _commit(self, records: Iterable[JournalRecord], kind: str, source: str) -> int:
        """Write ``records``' new rows to a new segment and commit it; return rows added."""
        kill_point("checkpoint.begin")
        with self._commit_lock():
            if self._spaces is not None and atomic.file_sig(self.path) != self._sig:
                self.refresh()  # another writer committed since the index was read
            index = self._index
            fresh = not os.path.exists(self.path)
            folder = segment_dir(self.path)
            name = new_segment_name(kind)
            # A new cache is written as one plain file; later rows go to new segments.
            tmp = (atomic.temporary_name(self.path) if fresh
                   else os.path.join(folder, f"{name[:-3]}.tmp-{os.getpid()}"))
            try:
                # HDF5 copes badly with a full disk (errors surface late, from destructors), so
                # make sure the segment fits before starting it.
                atomic.check_free_space(self.path, bytes_needed(records))
                if not fresh:
                    os.makedirs(folder, exist_ok=True)
                kill_point("checkpoint.copied")
                sizes: dict[str, int] = {}
                for rec in records:  # small segments get small chunks: bytes follow the rows
                    sizes[rec.space] = sizes.get(rec.space, 0) + len(rec.keys)
                added, grown, meta = write_rows_file(tmp, records, index, sizes, where=self.path)
                kill_point("checkpoint.written")
                if added:
                    read_back(tmp, grown)  # HDF5 may report a failed write only when an id is freed
                    with open(tmp, "rb+") as fh:
                        os.fsync(fh.fileno())
                    if fresh:
                        os.replace(tmp, self.path)
                        atomic.fsync_dir(self.path)
                    else:
                        os.replace(tmp, os.path.join(folder, name))
                        atomic.fsync_dir(os.path.join(folder, name))
                        kill_point("checkpoint.segment")
                        rows = {sp: m[3] for sp, m in meta.items() if m[3]}
                        self._write_manifest(index, Segment(name, rows), meta)
                else:
                    os.remove(tmp)
            except BaseException as exc:
                # Free the HDF5 objects of the failed file now: left to the garbage collector,
                # ids of a file whose close failed can crash the interpreter.
                atomic.clear_frames(exc)
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

    def _write_manifest(self, index: CacheIndex, new: Segment, meta: dict[str, SpaceMeta]) -> None:
        """Atomically replace the cache file by a manifest listing its segments and ``new``."""
        folder = segment_dir(self.path)
        segments = list(self._manifest) if self._manifest is not None else None
        if segments is None:
            # The file holds rows itself (version 1): it becomes the first segment, by a
            # hard link (no copy); the new manifest then replaces the name.
            base = new_segment_name("base")
            rows = {name: sum(n for f, n in sp.parts if f == self.path) for name, sp in index.items()}
            atomic.link_or_copy(self.path, os.path.join(folder, base))
            atomic.fsync_dir(os.path.join(folder, base))
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
        with atomic.replacing(self.path) as tmp:
            write_manifest(tmp, self.path, segments, spaces, FORMAT)

    def _truncate_journal(self) -> None:
        if self._journal is not None:
            self._journal.truncate()
        elif os.path.exists(self.journal_path):
            os.truncate(self.journal_path, 0)
