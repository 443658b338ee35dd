"""Reading rows of a cache: aligned with any list of keys, or a whole space in blocks.

:class:`CacheReader` never takes a lock: it reads the journal, then the manifest and
segments, so it never sees a half-written state, and when a writer replaced a file since
its index was read it reads the index again once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from deepfeat.exceptions import CacheCorruptError
from deepfeat.store.atomic import file_sig
from deepfeat.store.format import JOURNAL_SUFFIX
from deepfeat.store.index import CacheIndex, load_index
from deepfeat.store.journal import read_records
from deepfeat.store.layout import iter_space_groups, open_cache_file, reading, validate_space
from deepfeat.store.segments import Segment, segment_dir

__all__ = ["CacheReader", "read_rows_into"]

_READ_SPAN_BYTES = 16 << 20
_SCATTER_ROWS = 512


class CacheReader:
    """The rows of an embedding cache file, read from any number of threads at once.

    Parameters
    ----------
    path : str or path-like
        The ``.h5`` file. It need not exist yet (it then holds nothing).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.journal_path = self.path + JOURNAL_SUFFIX
        self._spaces: CacheIndex | None = None
        self._manifest: list[Segment] | None = None  # None: the rows are in the file itself
        self._sig: tuple[int, int, int] | None = None
        self._index_lock = threading.Lock()

    def _load_index(self) -> CacheIndex:
        spaces, manifest, sig = load_index(self.path, self.journal_path)
        # published together at the end: threads reading one cache may load its index at
        # the same time, and none may see another's half-read manifest
        self._manifest, self._sig = manifest, sig
        return spaces

    @property
    def _index(self) -> CacheIndex:
        if self._spaces is None:
            with self._index_lock:  # one load, not one per thread that asks at once
                if self._spaces is None:
                    self._spaces = self._load_index()
        return self._spaces

    def _open(self, file: str) -> h5py.File | None:
        """Open the cache file or one of its segments."""
        return open_cache_file(file, self.path, segment=file != self.path)

    def refresh(self) -> None:
        """Forget the in-memory index so the next call re-reads the file."""
        self._spaces = None

    def spaces(self) -> dict[str, dict[str, Any]]:
        """Feature spaces in the cache: fingerprint -> attributes (with ``rows``)."""
        return {name: {**sp.attrs, "rows": len(sp)} for name, sp in self._index.items()}

    def space_info(self, space: str) -> dict[str, Any] | None:
        """Attributes of ``space`` with ``rows``, ``dim`` and ``dtype``; ``None`` if absent."""
        sp = self._index.get(space)
        return None if sp is None else {**sp.attrs, "rows": len(sp), "dim": sp.dim, "dtype": sp.dtype}

    def contains(self, space: str, keys: Sequence[str]) -> np.ndarray:
        """Boolean mask: which ``keys`` have a row in ``space``."""
        sp = self._index.get(space)
        if sp is None:
            return np.zeros(len(keys), dtype=bool)
        return sp.contains(keys)

    def segments(self) -> list[str]:
        """Files holding the cache's rows: the segments, or the cache file itself."""
        self._index  # noqa: B018  (reads the manifest)
        if self._manifest is None:
            return [self.path] if os.path.exists(self.path) else []
        return [os.path.join(segment_dir(self.path), s.file) for s in self._manifest]

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
                # another writer merged the journal into the file since the index was read
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
                    not os.path.exists(file) or (file == self.path and file_sig(file) != self._sig)
                ):
                    # a writer replaced the file or compacted the segments since the index was read
                    self.refresh()
                    return self._read(space, keys, dtype, _retried=True)
                f = self._open(file)
                if f is None:
                    raise CacheCorruptError(f"{self.path}: the cache file disappeared while being read")
                at = part == p
                with f, reading(file):
                    ds = f["spaces"][space]["features"]
                    read_rows_into(ds, rows[sel][at] - sp.starts[p], out, sel[at])
        return out, found

    def iter_space(self, space: str, batch_rows: int = 65536) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(keys, features)`` blocks of a space (file rows, then journal rows)."""
        in_file: set[str] = set()
        sp = self._index.get(space)
        for file, _ in list(sp.parts) if sp is not None else ():
            f = self._open(file)
            if f is None:
                continue
            with f, reading(file):
                grp = dict(iter_space_groups(f, self.path)).get(space)
                if grp is not None:
                    keys, feats = validate_space(space, grp, file)
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
            # journal rows not in the file as read just now (a writer may have merged some in)
            extra = sp.j_rows - in_file
            if extra:
                rows = self._journal_rows(space, extra)
                order = list(rows)
                for s in range(0, len(order), batch_rows):
                    block = order[s : s + batch_rows]
                    yield block, np.stack([rows[k] for k in block])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


def read_rows_into(ds: h5py.Dataset, rows: np.ndarray, out: np.ndarray, pos: np.ndarray) -> None:
    """``out[pos] = ds[rows]`` for rows in any order, reading the file sequentially.

    The wanted rows are sorted; each span of whole chunks that holds some of them (at most
    ``_READ_SPAN_BYTES``) is read once into one of two reused buffers, and its rows are
    gathered, cast to ``out``'s dtype and scattered to their places on a second thread
    while the next span is read. With PyTorch installed its kernels do the scatter
    (several times faster than NumPy's float16 casts, and they release the GIL, so file
    reading and scattering overlap on two cores); without it NumPy does.
    """
    try:
        import torch
    except ImportError:
        torch = None

    order = np.argsort(rows, kind="stable")
    rows, pos = rows[order], np.asarray(pos)[order].astype(np.int64, copy=False)
    n_rows, dim = ds.shape
    chunk = ds.chunks[0] if ds.chunks else 4096
    span_rows = max(chunk, (_READ_SPAN_BYTES // max(1, dim * ds.dtype.itemsize)) // chunk * chunk)
    span_rows = min(span_rows, n_rows)
    if torch is not None:
        dst, rows_x, pos_x, wrap = torch.from_numpy(out), torch.from_numpy(rows), torch.from_numpy(pos), torch.from_numpy
    else:
        dst, rows_x, pos_x, wrap = out, rows, pos, np.asarray

    def scatter(src: Any, i: int, j: int, start: int) -> None:
        for a in range(i, j, _SCATTER_ROWS):
            b = min(j, a + _SCATTER_ROWS)
            lo, hi = int(rows[a]), int(rows[b - 1])
            if hi - lo == b - a - 1:
                # the block is a run of consecutive rows, each wanted once (the usual case
                # when most of a space is read): scatter straight from the buffer
                block = src[lo - start : hi - start + 1]
            elif torch is not None:
                block = src.index_select(0, rows_x[a:b] - start)
            else:
                block = src[rows_x[a:b] - start]
            if torch is not None:
                dst.index_copy_(0, pos_x[a:b], block.to(dst.dtype))
            else:
                dst[pos_x[a:b]] = block

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
        scatter(wrap(bufs[0]), i, j, start)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="deepfeat-read") as pool:
        pending = None
        for n, (i, j, start, stop) in enumerate(spans):
            buf = bufs[n % 2]  # the buffer the scatter before last used: finished below
            ds.read_direct(buf, np.s_[start:stop], np.s_[0 : stop - start])
            if pending is not None:
                pending.result()
            pending = pool.submit(scatter, wrap(buf), i, j, start)
        pending.result()
