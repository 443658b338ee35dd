"""Content hashes: the keys of the feature cache.

A key depends only on the bytes of an encoded file, or on the pixels of an in-memory
image, never on its path: the same photo under two names is featurized once, and a
file whose content changed gets a new key. :func:`file_digest` names weights files by
their content in the same spirit.
"""

from __future__ import annotations

import hashlib
import os
import threading

import numpy as np

from deepfeat.store.format import KEY_LENGTH

__all__ = ["KEY_LENGTH", "file_digest", "hash_array", "hash_bytes"]


def hash_bytes(data: bytes) -> str:
    """Return the cache key of an encoded image file's bytes.

    Examples
    --------
    >>> hash_bytes(b"abc") == hash_bytes(b"abc")
    True
    >>> len(hash_bytes(b"abc"))
    32
    """
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def hash_array(array: np.ndarray, mode: str = "") -> str:
    """Return the cache key of an in-memory image given as pixels.

    The shape, dtype and colour mode are part of the key, so two arrays with the same
    bytes but different layouts never collide.
    """
    array = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=16, person=b"deepfeat-array")
    h.update(f"{array.shape}|{array.dtype.str}|{mode}".encode())
    h.update(array.tobytes())
    return h.hexdigest()


_FILE_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}
_FILE_DIGESTS_LOCK = threading.Lock()


def file_digest(path: str | os.PathLike) -> str:
    """Return the SHA-256 hex digest of a file's content (e.g. a weights file).

    The digest is remembered per ``(real path, size, mtime, inode, ctime)``, so asking
    again for an unchanged file costs one ``stat`` call, while a file replaced or
    rewritten (a new package version, a retrained checkpoint) is hashed again.

    Raises
    ------
    OSError
        When the file cannot be read.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(delete=False) as fh:
    ...     _ = fh.write(b"abc")
    >>> file_digest(fh.name)[:16]
    'ba7816bf8f01cfea'
    >>> os.remove(fh.name)
    """
    real = os.path.realpath(os.fspath(path))
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    with _FILE_DIGESTS_LOCK:
        hit = _FILE_DIGESTS.get(key)
    if hit is not None:
        return hit
    h = hashlib.sha256()
    with open(real, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with _FILE_DIGESTS_LOCK:
        _FILE_DIGESTS[key] = digest
    return digest
