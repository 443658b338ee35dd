"""Torture suite, damaged and hostile cache files.

Truncated and bit-flipped caches must give a clear CacheCorruptError (never wrong numbers,
never another exception), ``deepfeat cache verify`` must exit non-zero naming the problem,
and ``deepfeat cache repair`` must salvage exactly the intact rows -- including journal
records stranded behind a damaged one -- into a new file that verifies.

A cache from someone else is data only: pickled-looking attributes, wrong dtypes, vlen
keys, absurd shapes, compound features, links to other files or paths, plugin filters --
each is refused as CacheCorruptError or handled safely; nothing is executed, nothing
allocates absurd memory, and the CLI prints one line instead of a traceback.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import TEST_RESNET, cli_options
from PIL import Image

from deepfeat.cli.main import main
from deepfeat.exceptions import CacheCorruptError
from deepfeat.featurize import FeatureCache
from deepfeat.store import repair_cache, scan_journal, verify_cache
from deepfeat.store.journal import encode_record

DIM = 512  # 2 kB rows: a 1 MiB chunk holds 512 rows
N = 3000
CLI_RANDOM = [*cli_options({k: v for k, v in TEST_RESNET.items() if k != "batch_size"}), "-q"]


@pytest.fixture(autouse=True)
def _fresh_cli_logging():
    """main() binds a log handler to the stderr of its test; drop it so later logs are not
    written into another test's closed capture stream (a '--- Logging error ---')."""
    yield
    logger = logging.getLogger("deepfeat")
    logger.handlers.clear()
    logger.propagate = True


def _keys(n: int, start: int = 0) -> list[str]:
    return [f"{i:032x}" for i in range(start, start + n)]


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def good_cache(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """N rows written in six sessions (six checkpoints), spread over several chunks."""
    path = tmp_path_factory.mktemp("good") / "c.h5"
    rows = _rows(N)
    cache = FeatureCache(path)
    for s in range(0, N, 500):
        with cache.writer():
            cache.append(
                "s",
                {"layer": "x", "preprocess": {"crop": [224, 224]}},
                _keys(500, s),
                rows[s : s + 500],
            )
    assert len(cache.segments()) == 6
    # the damage below is done to one file: merge the six segments into one first
    assert cache.compact()["segments_before"] == 6 and cache.segments() == [str(path)]
    assert verify_cache(path)["ok"]
    return path, rows


def _copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


def _cli(capsys, *argv: str) -> tuple[int, dict, str]:
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err[-2000:]
    return code, json.loads(captured.out), captured.err


def _assert_salvaged_exactly(out: Path, rows: np.ndarray) -> int:
    """Every row in the repaired file equals the original row of its key; returns the count."""
    if not out.exists():
        return 0
    got, found = FeatureCache(out).read("s", _keys(N))
    np.testing.assert_array_equal(got[found], rows[found])
    return int(found.sum())


# ------------------------------------------------------------------------- truncation
@pytest.mark.parametrize("cut", [100, 0.1, 0.5, 0.9, 0.99])
def test_truncated_cache_is_a_clear_error_and_repair_salvages_intact_rows(
    cut, good_cache, tmp_path, capsys
):
    src, rows = good_cache
    data = src.read_bytes()
    n = cut if isinstance(cut, int) else int(len(data) * cut)
    bad = tmp_path / "trunc.h5"
    bad.write_bytes(data[:n])

    with pytest.raises(CacheCorruptError, match="not a readable HDF5 file.*cache repair"):
        FeatureCache(bad).spaces()
    code, res, _ = _cli(capsys, "cache", "verify", str(bad))
    assert code == 1 and not res["ok"] and "truncated" in res["problems"][0]

    out = tmp_path / "fixed.h5"
    code, res, _ = _cli(capsys, "cache", "repair", str(bad), "--out", str(out))
    salvaged = _assert_salvaged_exactly(out, rows)
    assert salvaged == res["rows_salvaged"]
    # rows are stored front to back: every row wholly before the cut survives
    row_bytes_lost = len(data) - n
    if isinstance(cut, int):
        assert code == 1 and salvaged == 0 and not out.exists()
    else:
        assert code == 0 and res["verified"] and verify_cache(out)["ok"]
        assert salvaged >= N - row_bytes_lost // (DIM * 4) - 1024, (cut, salvaged)
    assert bad.stat().st_size == n, "repair must not modify its source"


def test_repair_salvage_grows_with_the_cut_point(good_cache, tmp_path):
    src, rows = good_cache
    data = src.read_bytes()
    counts = []
    for i, frac in enumerate((0.3, 0.6, 0.9)):
        bad = tmp_path / f"t{i}.h5"
        bad.write_bytes(data[: int(len(data) * frac)])
        res = repair_cache(bad, tmp_path / f"r{i}.h5")
        counts.append(_assert_salvaged_exactly(tmp_path / f"r{i}.h5", rows))
        assert counts[-1] == res["rows_salvaged"]
    assert counts[0] < counts[1] < counts[2] <= N


# ------------------------------------------------------------------------- bit flips
def _chunk_span(path: Path, row: int) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        ds = f["spaces/s/features"]
        info = ds.id.get_chunk_info_by_coord((row // ds.chunks[0] * ds.chunks[0], 0))
        return info.byte_offset, info.size


def test_flipped_bytes_in_feature_data_are_detected_not_returned(good_cache, tmp_path, capsys):
    src, rows = good_cache
    bad = _copy(src, tmp_path / "flip.h5")
    off, size = _chunk_span(bad, 1200)  # the chunk holding rows 1024-1535
    with open(bad, "r+b") as fh:
        fh.seek(off + size // 3)
        fh.write(b"\x7f\x7f\x7f\x7f")  # a plausible float, so only the checksum can tell
    reader = FeatureCache(bad)
    assert reader.spaces()["s"]["rows"] == N  # the index (keys) is intact
    with pytest.raises(CacheCorruptError, match="damaged cache file.*cache verify"):
        reader.read("s", _keys(1, 1200))
    got, found = reader.read("s", _keys(10, 0))  # other chunks still read
    np.testing.assert_array_equal(got, rows[:10])

    code, res, _ = _cli(capsys, "cache", "verify", str(bad))
    assert code == 1 and any("rows 1024-1535 cannot be read" in p for p in res["problems"])
    out = tmp_path / "fixed.h5"
    code, res, _ = _cli(capsys, "cache", "repair", str(bad), "--out", str(out))
    assert code == 0 and res["rows_salvaged"] == N - 512
    assert _assert_salvaged_exactly(out, rows) == N - 512


def test_random_byte_flips_never_give_wrong_rows_or_unexpected_errors(good_cache, tmp_path):
    """Fuzz: flip one byte at 80 random offsets; each read is right or a CacheCorruptError."""
    src, rows = good_cache
    data = src.read_bytes()
    rng = np.random.default_rng(7)
    keys = _keys(N)
    outcomes = {"clean": 0, "corrupt_error": 0}
    offsets = np.concatenate(
        [rng.integers(0, 16384, 40), rng.integers(0, len(data), 40)]
    )  # metadata, anywhere
    for trial, off in enumerate(offsets):
        bad = tmp_path / f"f{trial}.h5"
        b = bytearray(data)
        b[off] ^= 0xFF
        bad.write_bytes(bytes(b))
        try:
            got, found = FeatureCache(bad).read("s", keys)
        except CacheCorruptError:
            outcomes["corrupt_error"] += 1
        else:
            outcomes["clean"] += 1
            idx = np.flatnonzero(found)
            np.testing.assert_array_equal(
                got[idx], rows[idx], err_msg=f"wrong rows after a flip at byte {off}"
            )
        report = verify_cache(bad)  # never raises
        assert isinstance(report["ok"], bool)
        res = repair_cache(bad, tmp_path / f"r{trial}.h5")
        _assert_salvaged_exactly(tmp_path / f"r{trial}.h5", rows)
        assert res["rows_salvaged"] <= N
    assert sum(outcomes.values()) == len(offsets) and outcomes["corrupt_error"] > 0, outcomes


# ------------------------------------------------------------------------- journal
def test_journal_with_records_stranded_after_damage(good_cache, tmp_path, capsys):
    src, rows = good_cache
    path = _copy(src, tmp_path / "c.h5")
    extra = _rows(30, seed=5)
    recs = [
        encode_record("s", {"layer": "x"}, _keys(10, N + 10 * i), extra[10 * i : 10 * i + 10])
        for i in range(3)
    ]
    damaged = bytearray(recs[1])
    damaged[len(damaged) // 2] ^= 0xFF
    Path(str(path) + ".journal").write_bytes(recs[0] + bytes(damaged) + recs[2])

    scan = scan_journal(str(path) + ".journal")
    assert len(scan.records) == 2 and len(scan.stranded) == 1
    reader = FeatureCache(path)  # readers use what precedes the damage
    got, found = reader.read("s", _keys(30, N))
    assert found.tolist() == [True] * 10 + [False] * 20
    np.testing.assert_array_equal(got[:10], extra[:10])

    code, res, _ = _cli(capsys, "cache", "verify", str(path))
    assert code == 1 and "stranded" in json.dumps(res) and res["journal"]["stranded_records"] == 1
    out = tmp_path / "fixed.h5"
    code, res, _ = _cli(capsys, "cache", "repair", str(path), "--out", str(out))
    assert code == 0 and res["journal"]["rows_added"] == 20
    got, found = FeatureCache(out).read("s", _keys(N + 30))
    assert found.tolist() == [True] * (N + 10) + [False] * 10 + [True] * 10
    np.testing.assert_array_equal(got[:N], rows)
    np.testing.assert_array_equal(got[N + 20 :], extra[20:])


def test_a_torn_journal_tail_is_only_a_warning(good_cache, tmp_path, capsys):
    src, _ = good_cache
    path = _copy(src, tmp_path / "c.h5")
    rec = encode_record("s", {}, _keys(4, N), _rows(4, seed=9))
    Path(str(path) + ".journal").write_bytes(rec + rec[: len(rec) // 2])
    code, res, _ = _cli(capsys, "cache", "verify", str(path))
    assert code == 0 and res["ok"] and "torn record" in res["warnings"][0]
    assert res["spaces"]["s"]["journal_rows"] == 4


def test_verify_flags_bad_rows_and_attribute_mismatches(tmp_path, capsys):
    path = tmp_path / "c.h5"
    cache = FeatureCache(path)
    with cache.writer():
        cache.append("s", {}, _keys(20), _rows(20))
    with h5py.File(path, "a") as f:
        f["spaces/s/features"][3] = np.nan
        f["spaces/s/keys"][5] = b"Z" * 32
        f["spaces/s/keys"][6] = f["spaces/s/keys"][7]
        f["spaces/s"].attrs["dim"] = 7
    code, res, _ = _cli(capsys, "cache", "verify", str(path))
    assert code == 1
    text = " | ".join(res["problems"])
    for needle in (
        "1 row(s) with non finite",
        "1 row(s) with bad key",
        "1 row(s) with duplicate key",
        "dim=7",
    ):
        assert needle in text, (needle, text)
    out = tmp_path / "fixed.h5"
    res = repair_cache(path, out)
    assert res["rows_salvaged"] == 17 and verify_cache(out)["ok"]  # NaN, bad key, duplicate dropped


def test_repair_refuses_to_overwrite(good_cache, tmp_path, capsys):
    src, _ = good_cache
    code, res, err = _cli(capsys, "cache", "repair", str(src), "--out", str(src))
    assert code == 1 and "choose an --out other than the source" in res["error"]
    other = _copy(src, tmp_path / "exists.h5")
    code, res, _ = _cli(capsys, "cache", "repair", str(src), "--out", str(other))
    assert code == 1 and "already exists" in res["error"]
    code, res, _ = _cli(capsys, "cache", "repair", str(src))
    assert code == 2 and "--out" in res["error"]  # a missing option is a usage error


# ------------------------------------------------------------------------- hostile files
SENTINEL = "deepfeat_pwned.txt"


class _Payload:
    """Unpickling this would create a file: reading a cache must never unpickle anything."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __reduce__(self):
        return (open, (self.where, "w"))


def _base(path: Path, n: int = 4) -> Path:
    cache = FeatureCache(path)
    with cache.writer():
        cache.append("s", {"layer": "x"}, _keys(n), _rows(n))
    return path


def _hostile(kind: str, path: Path, tmp: Path) -> None:
    """Turn the valid cache at ``path`` into one of the hostile variants."""
    sentinel = str(tmp / SENTINEL)
    with h5py.File(path, "a") as f:
        g = f["spaces/s"]
        if kind == "pickled_attrs":
            blob = pickle.dumps(_Payload(sentinel))
            g.attrs["preprocess"] = np.void(blob)
            g.attrs["versions"] = np.frombuffer(blob, dtype=np.uint8)
            g.attrs["layer"] = blob.replace(b"\0", b"").decode("latin-1")
            g.attrs["weights"] = np.bytes_(blob.replace(b"\0", b""))
        elif kind == "reference_attr":
            g.attrs["backbone"] = f["spaces"].ref
        elif kind == "format_version_string":
            f.attrs["format_version"] = "1; import os"
        elif kind == "format_version_huge":
            f.attrs["format_version"] = 2**62
        elif kind == "format_as_array":
            f.attrs["format"] = np.array([b"deepfeat-cache", b"deepfeat-cache"])
        elif kind in (
            "vlen_keys",
            "int_features",
            "compound_features",
            "features_3d",
            "bigendian_features",
            "non_ascii_keys",
        ):
            del g["keys"], g["features"]
            keys = np.array(_keys(4), dtype="S32")
            feats = _rows(4)
            if kind == "vlen_keys":
                g.create_dataset("keys", data=_keys(4), dtype=h5py.string_dtype())
            elif kind == "non_ascii_keys":
                g.create_dataset("keys", data=np.array([b"\xff" * 32] * 4, dtype="S32"))
            else:
                g.create_dataset("keys", data=keys)
            if kind == "int_features":
                g.create_dataset("features", data=feats.astype(np.int64))
            elif kind == "compound_features":
                g.create_dataset(
                    "features", data=np.zeros((4, 2), dtype=[("a", "f4"), ("b", "i8")])
                )
            elif kind == "features_3d":
                g.create_dataset("features", data=feats.reshape(4, 2, DIM // 2))
            elif kind == "bigendian_features":
                g.create_dataset("features", data=feats.astype(">f4"))
            else:
                g.create_dataset("features", data=feats)
        elif kind == "absurd_rows":
            del g["keys"], g["features"]
            g.create_dataset("keys", shape=(10**12,), dtype="S32", chunks=(4096,))
            g.create_dataset("features", shape=(10**12, 8), dtype="f4", chunks=(4096, 8))
        elif kind == "absurd_width":
            del g["keys"], g["features"]
            g.create_dataset("keys", shape=(0,), maxshape=(None,), dtype="S32", chunks=(16,))
            g.create_dataset(
                "features", shape=(0, 10**9), maxshape=(None, 10**9), dtype="f4", chunks=(1, 1024)
            )
        elif kind == "external_link_space":
            other = tmp / "other.h5"
            _base(other)
            f["spaces"]["evil"] = h5py.ExternalLink(str(other), "/spaces/s")
        elif kind == "external_link_to_missing_file":
            f["spaces"]["evil"] = h5py.ExternalLink("/nonexistent/elsewhere.h5", "/x")
        elif kind == "soft_link_space":
            f["spaces"]["evil"] = h5py.SoftLink("/spaces/s")
        elif kind == "soft_link_keys":
            g2 = f["spaces"].create_group("t")
            g2["keys"] = h5py.SoftLink("/spaces/s/keys")
            g2["features"] = h5py.SoftLink("/spaces/s/features")
        elif kind == "spaces_is_a_dataset":
            del f["spaces"]
            f["spaces"] = np.arange(3)
        elif kind == "space_is_a_dataset":
            f["spaces"]["evil"] = np.arange(3)
        elif kind == "plugin_filter":
            del g["features"]
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_chunk((4, DIM))
            dcpl.set_filter(
                32001, h5py.h5z.FLAG_OPTIONAL
            )  # blosc: would make HDF5 look for a plugin
            space = h5py.h5s.create_simple((4, DIM))
            h5py.h5d.create(g.id, b"features", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
        else:  # pragma: no cover
            raise ValueError(kind)


HOSTILE = {  # kind -> "refused" (CacheCorruptError on reading) or "safe" (reads, sanitised)
    "pickled_attrs": "safe",
    "reference_attr": "safe",
    "format_version_string": "refused",
    "format_version_huge": "refused",
    "format_as_array": "refused",
    "vlen_keys": "refused",
    "non_ascii_keys": "refused",
    "int_features": "refused",
    "compound_features": "refused",
    "features_3d": "refused",
    "bigendian_features": "refused",
    "absurd_rows": "refused",
    "absurd_width": "refused",
    "external_link_space": "refused",
    "external_link_to_missing_file": "refused",
    "soft_link_space": "refused",
    "soft_link_keys": "refused",
    "spaces_is_a_dataset": "refused",
    "space_is_a_dataset": "refused",
    "plugin_filter": "refused",
}


@pytest.fixture(scope="module")
def one_image(tmp_path_factory):
    d = tmp_path_factory.mktemp("one")
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        d / "a.png"
    )
    return d


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_cache_is_refused_or_read_safely(kind, tmp_path, capsys, one_image):
    import resource

    path = _base(tmp_path / "evil.h5")
    _hostile(kind, path, tmp_path)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if HOSTILE[kind] == "refused":
        with pytest.raises(CacheCorruptError) as exc:
            FeatureCache(path).read("s", _keys(4))
        assert str(path) in str(exc.value)
    else:
        cache = FeatureCache(path)
        info = cache.spaces()["s"]
        json.dumps(info, default=str)
        assert all(isinstance(v, (str, int, float, bool, list, dict)) for v in info.values())
        got, found = cache.read("s", _keys(4))
        assert found.all()
        np.testing.assert_array_equal(got, _rows(4))
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert grew_mib < 200, f"reading {kind} made memory grow by {grew_mib:.0f} MiB"

    code, res, _ = _cli(capsys, "cache", "verify", str(path))
    assert code == 1 and res["problems"], (kind, res)
    out = tmp_path / "fixed.h5"
    main(["cache", "repair", str(path), "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if out.exists():
        assert verify_cache(out)["ok"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["featurize", str(one_image), "--cache", str(path), *CLI_RANDOM, "--json"])
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if HOSTILE[kind] == "refused":
        assert code == 1
        err = json.loads(captured.out)
        assert err["error_type"] == "CacheCorruptError" and "\n" not in err["error"]
    assert not (tmp_path / SENTINEL).exists(), "reading the cache executed code"


def test_hostile_journal_is_data_only(tmp_path):
    """A journal record's header is JSON; absurd counts or dtypes stop the scan, nothing runs."""
    path = _base(tmp_path / "c.h5")
    good = encode_record("s", {"layer": "x"}, _keys(2, 100), _rows(2, seed=4))
    import struct
    import zlib

    def record(header: dict, payload: bytes) -> bytes:
        h = json.dumps(header).encode()
        return (
            struct.pack("<4sIII", b"DFJ1", len(h), len(payload), zlib.crc32(h + payload))
            + h
            + payload
        )

    evil = [
        record(
            {"space": "s", "n": 10**12, "dim": 10**9, "dtype": "float32", "attrs": {}}, b"\0" * 64
        ),
        record(
            {"space": "s", "n": 1, "dim": 2, "dtype": "object", "attrs": {}}, b"0" * 32 + b"\0" * 16
        ),
        record(
            {"space": "s", "n": 1, "dim": 2, "dtype": "float32", "attrs": "__import__('os')"},
            b"0" * 40,
        ),
    ]
    for i, bad in enumerate(evil):
        shutil.copy(path, tmp_path / f"c{i}.h5")
        Path(tmp_path / f"c{i}.h5.journal").write_bytes(good + bad)
        reader = FeatureCache(tmp_path / f"c{i}.h5")
        got, found = reader.read("s", _keys(2, 100))
        assert found.all()
        np.testing.assert_array_equal(got, _rows(2, seed=4))
        assert verify_cache(tmp_path / f"c{i}.h5")["journal"]["records"] == 1
