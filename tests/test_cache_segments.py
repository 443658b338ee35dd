"""Segmented caches: writes proportional to what is written, v1 files, compaction, plain h5py."""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing as mp
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from deepfeat.cli.main import main
from deepfeat.exceptions import CacheCorruptError
from deepfeat.store import FeatureCache, repair_cache, verify_cache
from deepfeat.store.journal import append_record, encode_record

DATA = Path(__file__).parent / "data"


def _keys(n: int, start: int = 0) -> list[str]:
    return [f"{i:032x}" for i in range(start, start + n)]


def _add(path, start: int, n: int, dim: int = 16, space: str = "s", value: float | None = None) -> np.ndarray:
    rows = np.random.default_rng(start).normal(size=(n, dim)).astype(np.float32)
    if value is not None:
        rows[:] = value
    c = FeatureCache(path)
    with c.writer():
        c.append(space, {"layer": "x", "preprocess": {"crop": [4, 4]}}, _keys(n, start), rows)
    return rows


def _digest(path: str) -> str:
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()


def _plain_h5py(path) -> dict[str, np.ndarray]:
    """The README's recipe: every row of every space with nothing but h5py."""
    out = {}
    with h5py.File(path, "r") as f:
        for name, g in f["spaces"].items():
            keys = g["keys"][...].astype(str)
            out[name] = pd.DataFrame(g["features"][...], index=keys)
    return out


def test_a_small_write_adds_a_small_segment_and_leaves_the_rest_untouched(tmp_path):
    path = tmp_path / "c.h5"
    big = _add(path, 0, 20000, dim=64)
    assert FeatureCache(path).segments() == [str(path)]  # a new cache is one plain file
    big_bytes = os.path.getsize(path)
    before = {str(path): _digest(path)}
    ino = os.stat(path).st_ino
    small = _add(path, 10**6, 5, dim=64)
    c = FeatureCache(path)
    segs = c.segments()
    assert len(segs) == 2
    assert os.stat(segs[0]).st_ino == ino, "the one-file cache became segment 1 by a link, not a copy"
    assert _digest(segs[0]) == before[str(path)], "an existing segment was modified"
    written = os.path.getsize(segs[1]) + os.path.getsize(path)  # the new segment + the manifest
    assert written < big_bytes / 20, f"adding 5 rows wrote {written:,} bytes to a {big_bytes:,}-byte cache"
    got, found = c.read("s", _keys(3, 19997) + _keys(5, 10**6))
    assert found.all()
    np.testing.assert_array_equal(got, np.concatenate([big[-3:], small]))
    # a third write adds a third segment; the first two stay as they were
    d1 = _digest(segs[1])
    _add(path, 2 * 10**6, 5, dim=64)
    segs3 = FeatureCache(path).segments()
    assert segs3[:2] == segs and _digest(segs[1]) == d1 and len(segs3) == 3
    assert verify_cache(path)["ok"]


def test_plain_h5py_and_pandas_see_every_row_of_every_segment(tmp_path):
    path = tmp_path / "c.h5"
    a = _add(path, 0, 50)
    b = _add(path, 50, 30)
    c16 = _add(path, 500, 7, dim=3, space="other")
    _add(path, 0, 10, value=99.0)  # keys already present: nothing is written twice
    tables = _plain_h5py(path)
    assert sorted(tables) == ["other", "s"]
    s = tables["s"]
    assert len(s) == 80 and s.index.is_unique
    np.testing.assert_array_equal(s.loc[_keys(80)].to_numpy(), np.concatenate([a, b]))
    np.testing.assert_array_equal(tables["other"].loc[_keys(7, 500)].to_numpy(), c16)
    with h5py.File(path, "r") as f:
        assert f["spaces/s"].attrs["layer"] == "x"
        assert json.loads(f["spaces/s"].attrs["preprocess"]) == {"crop": [4, 4]}


def test_a_version_1_file_from_the_old_writer_reads_migrates_and_compacts(tmp_path):
    path = tmp_path / "old.h5"
    path.write_bytes(gzip.decompress((DATA / "cache_v1.h5.gz").read_bytes()))
    rng = np.random.default_rng(15)  # how the fixture's rows were drawn (tests/data/README.md)
    want32 = rng.normal(size=(40, 6)).astype(np.float32)
    want16 = rng.normal(size=(30, 4)).astype(np.float16)
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 1 and not f["spaces/space32/features"].is_virtual
    c = FeatureCache(path)
    assert {k: v["rows"] for k, v in c.spaces().items()} == {"space32": 40, "space16": 30}
    got, found = c.read("space32", _keys(40))
    assert found.all()
    np.testing.assert_array_equal(got, want32)
    # first write: migrated into segments, the old rows untouched
    new = _add(path, 1000, 4, dim=6, space="space32")
    c = FeatureCache(path)
    assert len(c.segments()) == 2 and verify_cache(path)["ok"]
    got, found = c.read("space32", _keys(40) + _keys(4, 1000))
    assert found.all()
    np.testing.assert_array_equal(got, np.concatenate([want32, new]))
    got16, _ = c.read("space16", _keys(30, 100), dtype=None)
    assert got16.dtype == np.float16
    np.testing.assert_array_equal(got16, want16)
    # compaction: one self-contained version-1 file again, no segment folder
    res = c.compact()
    assert res["segments_before"] == 2 and res["rows"] == 74
    assert not os.path.exists(str(path) + ".d")
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 1 and not f["spaces/space32/features"].is_virtual
        assert f["spaces/space32/features"].dtype == np.float32
        assert f["spaces/space16/features"].dtype == np.float16
    got, found = FeatureCache(path).read("space32", _keys(40) + _keys(4, 1000))
    np.testing.assert_array_equal(got, np.concatenate([want32, new]))
    assert verify_cache(path)["ok"]


def test_a_missing_segment_is_a_clear_error_verify_names_it_and_repair_keeps_the_rest(tmp_path):
    path = tmp_path / "c.h5"
    a = _add(path, 0, 20)
    _add(path, 20, 20)
    c = _add(path, 40, 20)
    segs = FeatureCache(path).segments()
    os.remove(segs[1])
    with pytest.raises(CacheCorruptError, match=f"segment {os.path.basename(segs[1])}.*missing"):
        FeatureCache(path).spaces()
    report = verify_cache(path)
    assert not report["ok"] and any("missing" in p for p in report["problems"])
    res = repair_cache(path, tmp_path / "fixed.h5")
    assert res["rows_salvaged"] == 40 and res["verified"]
    got, found = FeatureCache(tmp_path / "fixed.h5").read("s", _keys(60))
    assert found.tolist() == [True] * 20 + [False] * 20 + [True] * 20
    np.testing.assert_array_equal(got[found], np.concatenate([a, c]))


@pytest.mark.parametrize("forgery", ["outside", "absolute", "count", "not_json"])
def test_a_forged_manifest_is_refused(tmp_path, forgery):
    path = tmp_path / "c.h5"
    _add(path, 0, 5)
    _add(path, 5, 5)
    outside = tmp_path / "elsewhere.h5"
    shutil.copy(FeatureCache(path).segments()[0], outside)
    with h5py.File(path, "a") as f:
        segs = json.loads(f.attrs["segments"])
        if forgery == "outside":
            segs[0]["file"] = "../elsewhere.h5"
        elif forgery == "absolute":
            segs[0]["file"] = str(outside)
        elif forgery == "count":
            segs[0]["rows"]["s"] = 4
        f.attrs["segments"] = "[{" if forgery == "not_json" else json.dumps(segs)
    with pytest.raises(CacheCorruptError):
        FeatureCache(path).read("s", _keys(10))
    assert not verify_cache(path)["ok"]


def _fold_worker(path: str, w: int, n: int) -> None:
    """A writer that holds no cache lock: its own journal, then one commit."""
    journal = os.path.join(os.path.dirname(path), f"worker{w}.journal")
    rows = np.full((n, 4), w, np.float32)
    keys = _keys(n, 1000 * w) + _keys(3, 0)  # three keys every worker shares
    rows = np.concatenate([rows, np.full((3, 4), -1, np.float32)])
    with open(journal, "ab", buffering=0) as fh:
        for s in range(0, len(keys), 7):
            append_record(fh, encode_record("s", {}, keys[s : s + 7], rows[s : s + 7]))
    FeatureCache(path, lock_timeout=120).merge_journals([journal])


def test_many_writers_add_segments_at_once_and_no_row_is_written_twice(tmp_path):
    path = tmp_path / "c.h5"
    _add(path, 0, 3, dim=4, value=-1.0)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_fold_worker, args=(str(path), w, 40)) for w in range(1, 5)]
    for p in procs:
        p.start()
    _add(path, 9000, 10, dim=4, value=7.0)  # and the journal writer, meanwhile
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    tables = _plain_h5py(path)["s"]
    assert tables.index.is_unique, "a row was written twice"
    assert len(tables) == 3 + 4 * 40 + 10
    for w in range(1, 5):
        assert (tables.loc[_keys(40, 1000 * w)].to_numpy() == w).all()
    assert verify_cache(path)["ok"]


def test_cli_compact_merges_segments(tmp_path, capsys):
    path = tmp_path / "c.h5"
    rows = np.concatenate([_add(path, 0, 10), _add(path, 10, 10), _add(path, 20, 10)])
    assert main(["cache", "verify", str(path)]) == 0
    assert "3 segments" in capsys.readouterr().out
    assert main(["cache", "compact", str(path), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["segments_before"] == 3 and res["rows"] == 30
    assert FeatureCache(path).segments() == [str(path)]
    got, found = FeatureCache(path).read("s", _keys(30))
    np.testing.assert_array_equal(got, rows)
    assert main(["cache", "compact", str(tmp_path / "nope.h5")]) != 0
    assert "no such cache file" in capsys.readouterr().err


def test_the_write_benchmark_shows_bytes_written_do_not_grow_with_the_cache(tmp_path):
    from deepfeat.benchmarking.cache_write import format_cache_write, measure_cache_write

    res = measure_cache_write((1_000, 20_000), dim=32, folder=str(tmp_path), copy_reference=False)
    small, large = res["rows"]
    assert large["cache_bytes"] > 10 * small["cache_bytes"]
    assert large["bytes_of_new_files"] == small["bytes_of_new_files"], "new files grew with the cache"
    if small["bytes_written"] is not None:  # (Linux: /proc/self/io)
        assert large["bytes_written"] <= small["bytes_written"] * 1.1
        assert large["bytes_written"] < large["cache_bytes"] / 10
    assert "20,000" in format_cache_write(res)
