"""The constants of the on-disk cache format, in one place (see docs/cache-format.md).

Every reader, writer and checker of a cache takes its names, limits and suffixes from
here, so that they cannot disagree about what a valid file is.
"""

from __future__ import annotations

__all__ = [
    "ALLOWED_DTYPES",
    "BUILTIN_FILTERS",
    "CHUNK_BYTES",
    "COMMIT_LOCK_SUFFIX",
    "FORMAT",
    "FORMAT_VERSION",
    "H5_ERRORS",
    "JOURNAL_CHECKPOINT_BYTES",
    "JOURNAL_SUFFIX",
    "KEY_CHUNK_ROWS",
    "KEY_LENGTH",
    "LOCK_SUFFIX",
    "MAX_DIM",
    "PENDING_DIR",
    "SEGMENT_DIR_SUFFIX",
    "rows_per_chunk",
]

#: The root ``format`` attribute of every cache file and segment.
FORMAT = "deepfeat-cache"
#: Highest format version read: 1 = rows in the file, 2 = a manifest of segments.
FORMAT_VERSION = 2
#: Hex characters of a key (a 128-bit BLAKE2b digest of an input's content).
KEY_LENGTH = 32
#: Dtypes a feature matrix (and a journal record) may have.
ALLOWED_DTYPES = ("float32", "float16")
#: Widest embedding a cache may hold; wider claims are refused as implausible (a forged
#: width would otherwise make readers allocate absurd arrays).
MAX_DIM = 1 << 16
#: Target size of one HDF5 chunk of the feature matrix.
CHUNK_BYTES = 1 << 20
#: Rows per HDF5 chunk of the keys dataset.
KEY_CHUNK_ROWS = 4096
#: Checkpoint automatically once the journal holds this many bytes.
JOURNAL_CHECKPOINT_BYTES = 256 << 20
#: HDF5 filters built into libhdf5/h5py. Any other filter would make HDF5 look for a
#: plugin library, so datasets that use one are refused before any data is read.
BUILTIN_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit",
                   6: "scaleoffset", 32000: "lzf"}
#: What h5py raises for a damaged file (RuntimeError too: e.g. a corrupt local heap).
H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)

#: ``<cache>.journal``: the writer's append-only journal of new rows.
JOURNAL_SUFFIX = ".journal"
#: ``<cache>.lock``: held by the one writer of the journal.
LOCK_SUFFIX = ".lock"
#: ``<cache>.commit.lock``: held for the moment a segment is committed.
COMMIT_LOCK_SUFFIX = ".commit"
#: ``<cache>.d/``: the segments of a version-2 cache.
SEGMENT_DIR_SUFFIX = ".d"
#: ``<cache>.d/pending/``: journals of writers without the cache lock (Ray actors).
PENDING_DIR = "pending"


def rows_per_chunk(dim: int, itemsize: int) -> int:
    """Rows of one HDF5 chunk of a ``dim``-wide feature matrix (about :data:`CHUNK_BYTES`).

    Examples
    --------
    >>> rows_per_chunk(2048, 4)
    128
    """
    return int(max(16, min(8192, CHUNK_BYTES // max(1, dim * itemsize))))
