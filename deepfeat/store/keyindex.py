"""Vectorized, exact lookups of content-hash keys in a feature space.

A cache's rows are keyed by 32-character hex digests. A Python ``dict`` of them costs
about 180 bytes and one interpreted hash lookup per key; :class:`KeyIndex` keeps the
stored ``|S32`` keys as they come from HDF5, sorted by their last 64 bits, and looks
a whole request up with NumPy: one ``join`` and ``encode`` of the request, a
``searchsorted`` on the 64-bit codes and a byte-for-byte comparison of the full keys
(so a code shared by two keys can never return the wrong row). Keys whose code is
shared (never for real digests; a forged file may try) are resolved by a second,
exact ``searchsorted`` on the sorted full keys, so no input makes a lookup quadratic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepfeat.store.format import KEY_LENGTH

__all__ = ["KeyIndex"]

_CODE_CHARS = 16  # the last 16 hex characters = 64 bits
_NIBBLE = np.zeros(256, dtype=np.uint64)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i
_SHIFTS = np.arange(4 * (_CODE_CHARS - 1), -1, -4, dtype=np.uint64)


def _codes(key_bytes: np.ndarray) -> np.ndarray:
    """Last 64 bits of each ``(n, KEY_LENGTH)`` uint8 key (non-hex characters count as 0)."""
    nib = _NIBBLE[key_bytes[:, KEY_LENGTH - _CODE_CHARS :]]
    return np.bitwise_or.reduce(nib << _SHIFTS, axis=1) if len(nib) else np.zeros(0, np.uint64)


class KeyIndex:
    """Row numbers of stored keys, looked up many at a time.

    Parameters
    ----------
    keys : ndarray of dtype ``|S32``
        The stored keys in row order (row ``i`` holds ``keys[i]``).
    """

    def __init__(self, keys: np.ndarray | None = None) -> None:
        if keys is None:
            keys = np.zeros(0, dtype=f"S{KEY_LENGTH}")
        self._bytes = np.ascontiguousarray(keys, dtype=f"S{KEY_LENGTH}").view(np.uint8).reshape(-1, KEY_LENGTH)
        codes = _codes(self._bytes)
        self._order = np.argsort(codes, kind="stable")
        self._sorted = codes[self._order]
        self._exact: tuple[np.ndarray, np.ndarray] | None = None  # full keys sorted, built on demand

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self.lookup([key])[0] >= 0)

    def lookup(self, keys: Sequence[str]) -> np.ndarray:
        """Row of each key, ``-1`` where absent (or not a 32-character ASCII string).

        Parameters
        ----------
        keys : sequence of str

        Returns
        -------
        ndarray of int64, shape (len(keys),)
        """
        n = len(keys)
        rows = np.full(n, -1, dtype=np.int64)
        if n == 0 or len(self) == 0:
            return rows
        try:
            joined = "".join(keys).encode("ascii")
            lengths_ok = len(joined) == n * KEY_LENGTH and set(map(len, keys)) == {KEY_LENGTH}
        except (TypeError, UnicodeEncodeError):
            lengths_ok = False
        if not lengths_ok:  # some keys cannot be stored keys: look the well-formed ones up
            ok = [i for i, k in enumerate(keys) if isinstance(k, str) and len(k) == KEY_LENGTH and k.isascii()]
            if ok:
                rows[ok] = self.lookup([keys[i] for i in ok])
            return rows
        want = np.frombuffer(joined, dtype=np.uint8).reshape(n, KEY_LENGTH)
        codes = _codes(want)
        at = np.minimum(np.searchsorted(self._sorted, codes), len(self) - 1)
        cand = self._order[at]
        hit = (self._bytes[cand] == want).all(axis=1)
        rows[hit] = cand[hit]
        shared = np.flatnonzero(~hit & (self._sorted[at] == codes))
        if shared.size:  # another key with the same code came first: search the full keys
            rows[shared] = self._lookup_exact(want[shared])
        return rows

    def _lookup_exact(self, want: np.ndarray) -> np.ndarray:
        if self._exact is None:
            full = self._bytes.view(f"S{KEY_LENGTH}").ravel()
            order = np.argsort(full, kind="stable")
            self._exact = (full[order], order)
        keys, order = self._exact
        w = np.ascontiguousarray(want).view(f"S{KEY_LENGTH}").ravel()
        at = np.minimum(np.searchsorted(keys, w), len(keys) - 1)
        return np.where(keys[at] == w, order[at], -1)
