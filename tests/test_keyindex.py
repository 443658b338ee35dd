"""KeyIndex: vectorized lookups agree with a dict for every kind of request."""

from __future__ import annotations

import hashlib

import numpy as np

from deepfeat.store import KeyIndex


def _digests(n: int, salt: bytes = b"") -> list[str]:
    return [hashlib.blake2b(salt + i.to_bytes(8, "little"), digest_size=16).hexdigest() for i in range(n)]


def _expect(stored: list[str], request: list) -> np.ndarray:
    first: dict[str, int] = {}
    for i, k in enumerate(stored):
        first.setdefault(k, i)
    return np.array([first.get(k, -1) if isinstance(k, str) else -1 for k in request], dtype=np.int64)


def test_lookup_matches_a_dict_in_any_order_with_absent_and_repeated_keys():
    stored = _digests(5000)
    idx = KeyIndex(np.array(stored, dtype="S32"))
    rng = np.random.default_rng(0)
    request = [stored[i] for i in rng.integers(0, 5000, 8000)] + _digests(300, b"absent")
    got = idx.lookup(request)
    np.testing.assert_array_equal(got, _expect(stored, request))
    assert len(idx) == 5000 and stored[17] in idx and _digests(1, b"absent")[0] not in idx


def test_keys_sharing_their_64_bit_code_are_told_apart():
    # same last 16 hex characters, different first 16: the code collides for all of them
    stored = [f"{i:016x}" + "ab" * 8 for i in range(3000)]
    idx = KeyIndex(np.array(stored, dtype="S32"))
    request = stored[::-1] + [f"{i:016x}" + "ab" * 8 for i in range(3000, 3100)]
    np.testing.assert_array_equal(idx.lookup(request), _expect(stored, request))


def test_malformed_requests_are_absent_not_errors():
    stored = _digests(50)
    idx = KeyIndex(np.array(stored, dtype="S32"))
    request = [stored[3], "abc", stored[4] + "0", "é" * 32, stored[5].upper(), b"x" * 32, stored[6], ""]
    got = idx.lookup(request)
    assert got.tolist() == [3, -1, -1, -1, -1, -1, 6, -1]


def test_empty_index_and_empty_request():
    assert KeyIndex().lookup(_digests(3)).tolist() == [-1, -1, -1]
    assert KeyIndex(np.array(_digests(3), dtype="S32")).lookup([]).shape == (0,)
