"""FeatureCache: journal recovery, one writer at a time, aligned reads, validation."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import h5py
import numpy as np
import pytest

from deepfeat.exceptions import CacheCorruptError, CacheLockedError
from deepfeat.store import FeatureCache, JournalWriter


def _keys(n: int, start: int = 0) -> list[str]:
    return [f"{i:032x}" for i in range(start, start + n)]


def _fill(path, n=100, dim=8, dtype=np.float32, space="s"):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(n, dim)).astype(dtype)
    c = FeatureCache(path)
    with c.writer():
        for s in range(0, n, 16):
            c.append(space, {"layer": "x"}, _keys(n)[s : s + 16], feats[s : s + 16])
    return feats


def test_rows_round_trip_and_layout_is_plain_h5py(tmp_path):
    path = tmp_path / "c.h5"
    feats = _fill(path, dtype=np.float16)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "deepfeat-cache"
        g = f["spaces/s"]
        assert g["features"].dtype == np.float16 and g["features"].chunks[1] == 8
        assert g["keys"][0].decode() == _keys(1)[0]
        assert g.attrs["layer"] == "x"
    got, found = FeatureCache(path).read("s", _keys(100)[::-1])
    assert found.all()
    np.testing.assert_array_equal(got, feats[::-1].astype(np.float32))


def test_random_order_read_matches_sequential_and_marks_missing(tmp_path):
    path = tmp_path / "c.h5"
    feats = _fill(path, n=3000, dim=4)
    rng = np.random.default_rng(1)
    order = rng.permutation(3000)[:1000].tolist()
    req = [_keys(3000)[i] for i in order] + ["f" * 32]
    got, found = FeatureCache(path).read("s", req)
    assert found[:-1].all() and not found[-1]
    np.testing.assert_array_equal(got[:-1], feats[order])
    assert np.isnan(got[-1]).all()


def test_damaged_journal_tail_is_ignored_and_folded_in_by_next_writer(tmp_path):
    path = tmp_path / "c.h5"
    c = FeatureCache(path)
    with c.writer():
        c.append("s", {}, _keys(4), np.ones((4, 3), np.float32))
    # simulate a killed writer: two intact records, then a torn third one
    jpath = c.journal_path
    with JournalWriter(jpath) as journal:  # what a writer appends before it checkpoints
        journal.append("s", {}, _keys(2, 10), np.full((2, 3), 2, np.float32))
        journal.append("s", {}, _keys(2, 20), np.full((2, 3), 3, np.float32))
    size = os.path.getsize(jpath)
    with open(jpath, "r+b") as fh:
        fh.truncate(size - 5)
    reader = FeatureCache(path)
    assert reader.spaces()["s"]["rows"] == 6  # 4 in h5 + 2 intact journal rows
    with FeatureCache(path).writer() as w:
        assert w.spaces()["s"]["rows"] == 6
    assert not os.path.exists(jpath)
    got, found = FeatureCache(path).read("s", _keys(2, 10) + _keys(2, 20))
    assert found.tolist() == [True, True, False, False]


def test_reader_indexed_before_a_checkpoint_still_finds_journal_rows(tmp_path):
    """Journal rows are read from disk on demand: a merge by a writer in between is followed."""
    path = tmp_path / "c.h5"
    _fill(path, n=4, dim=3)
    with JournalWriter(FeatureCache(path).journal_path) as journal:  # a writer still running
        journal.append("s", {}, _keys(3, 50), np.full((3, 3), 7, np.float32))
    reader = FeatureCache(path)
    assert reader.spaces()["s"]["rows"] == 7  # index taken while 3 rows are journal-only
    with FeatureCache(path).writer():  # the next writer merges the journal into the .h5
        pass
    assert not os.path.exists(str(path) + ".journal")
    got, found = reader.read("s", _keys(3, 50) + _keys(1))
    assert found.all()
    np.testing.assert_array_equal(got[:3], np.full((3, 3), 7, np.float32))
    seen = [k for keys, _ in reader.iter_space("s") for k in keys]
    assert sorted(seen) == sorted(_keys(4) + _keys(3, 50))  # each row once, none lost


def _hold_lock(path, ready, release):
    c = FeatureCache(path)
    with c.writer():
        ready.set()
        release.wait(30)


def test_second_writer_waits_then_fails_clearly(tmp_path):
    path = str(tmp_path / "c.h5")
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(path, ready, release))
    p.start()
    try:
        assert ready.wait(30)
        t0 = time.monotonic()
        with pytest.raises(CacheLockedError, match=r"another process \(pid \d+\) is writing"):
            with FeatureCache(path, lock_timeout=0.5).writer():
                pass
        assert time.monotonic() - t0 >= 0.45
        release.set()
        p.join(30)
        with FeatureCache(path, lock_timeout=5).writer():  # free again
            pass
    finally:
        release.set()
        p.join(5)


def test_not_a_cache_and_inconsistent_datasets_are_clear_errors(tmp_path):
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"definitely not hdf5")
    with pytest.raises(CacheCorruptError, match="not a readable HDF5 file"):
        FeatureCache(bogus).spaces()
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(CacheCorruptError, match="not a deepfeat cache"):
        FeatureCache(other).spaces()
    path = tmp_path / "c.h5"
    _fill(path)
    with h5py.File(path, "a") as f:
        f["spaces/s/features"].resize((50, 8))
    with pytest.raises(CacheCorruptError, match="100 keys but 50 feature rows"):
        FeatureCache(path).spaces()
