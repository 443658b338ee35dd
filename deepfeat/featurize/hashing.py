"""Content hashes: the keys of the feature cache.

A key depends only on the bytes of an encoded file, or on the pixels of an in-memory
image, never on its path: the same photo under two names is featurized once, and a
file whose content changed gets a new key.
"""

from __future__ import annotations

import hashlib

import numpy as np

KEY_LENGTH = 32  # hex characters of a 128-bit BLAKE2b digest


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
