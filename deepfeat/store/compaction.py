"""Compaction: every segment of a cache merged back into one self-contained file.

The result is a version-1 file, readable by any deepfeat and by plain h5py without its
segment folder. Readers that hold the old segments open keep reading them; the caller
(:meth:`FeatureCache.compact <deepfeat.store.writer.FeatureCache.compact>`) holds the
writer and commit locks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import numpy as np

from deepfeat.store import atomic
from deepfeat.store.index import CacheIndex
from deepfeat.store.journal import JournalRecord
from deepfeat.store.layout import open_cache_file, reading, validate_space
from deepfeat.store.rows_file import read_back, write_rows_file
from deepfeat.store.segments import Segment, segment_dir

__all__ = ["remove_segments", "stored_records", "write_compacted"]


def stored_records(cache: str, index: CacheIndex, batch_rows: int = 65536) -> Iterator[JournalRecord]:
    """Every stored row of cache ``cache`` once (the first of each key), as records in the stored dtype."""
    for name, sp in index.items():
        for p, (file, _) in enumerate(sp.parts):
            with open_cache_file(file, cache, segment=file != cache) as f, reading(file):
                keys, feats = validate_space(name, f["spaces"][name], file)
                for s in range(0, keys.shape[0], batch_rows):
                    block = [k.decode("ascii") for k in keys[s : s + batch_rows]]
                    first = sp.h5_rows.lookup(block) == sp.starts[p] + s + np.arange(len(block))
                    if first.any():
                        rows = feats[s : s + batch_rows][first]
                        yield JournalRecord(name, sp.attrs, [k for k, f_ in zip(block, first) if f_], rows, 0)


def write_compacted(cache: str, index: CacheIndex, files: Sequence[str]) -> int:
    """Atomically replace cache file ``cache`` by one file holding every row of ``index``.

    ``files`` are the files that hold the rows now (their size bounds the space needed).
    Returns the rows written.
    """
    with atomic.replacing(cache) as tmp:
        atomic.check_free_space(cache, sum(os.path.getsize(p) for p in files))
        added, grown, _ = write_rows_file(tmp, stored_records(cache, index), where=cache)
        read_back(tmp, grown)
    return added


def remove_segments(cache: str, segments: Sequence[Segment]) -> None:
    """Delete the segment files a compacted cache no longer lists, then its folder if empty."""
    folder = segment_dir(cache)
    for seg in segments:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, seg.file))
    with contextlib.suppress(OSError):
        os.rmdir(folder)  # only when empty (pending journals of other writers stay)
