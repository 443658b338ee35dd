"""Featurizer: bad inputs, the cache's hit/miss/changed/duplicate behaviour, and the CLI."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import IS_ROOT, sample_photo
from PIL import Image

from deepfeat.cli.main import main
from deepfeat.featurize import Featurizer

RANDOM = {"backbone": "torchvision:resnet18", "weights": None, "device": "cpu", "precision": "fp32"}


def _jpeg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def bad_dir(tmp_path: Path) -> dict[str, Path]:
    """One file for each kind of bad input the issue lists, next to good ones."""
    d = tmp_path / "mixed"
    d.mkdir()
    jpg = _jpeg_bytes(sample_photo("astronaut"))
    png = io.BytesIO()
    Image.fromarray(sample_photo("coffee")).save(png, "PNG")
    png = png.getvalue()
    files = {
        "good_jpg": d / "good.jpg",
        "good_png": d / "good.png",
        "zero_byte": d / "zero.jpg",
        "truncated_jpeg": d / "truncated.jpg",
        "truncated_png": d / "truncated.png",
        "corrupt_png": d / "corrupt.png",
        "text_as_jpg": d / "notes.jpg",
        "directory": d / "folder.jpg",
    }
    files["good_jpg"].write_bytes(jpg)
    files["good_png"].write_bytes(png)
    files["zero_byte"].write_bytes(b"")
    files["truncated_jpeg"].write_bytes(jpg[: len(jpg) // 2])
    files["truncated_png"].write_bytes(png[: len(png) // 3])
    corrupt = bytearray(png)
    for i in range(200, min(len(corrupt), 4000), 7):  # scramble compressed data after the header
        corrupt[i] ^= 0x5A
    files["corrupt_png"].write_bytes(bytes(corrupt))
    files["text_as_jpg"].write_text("this is a text file, not a JPEG\n")
    files["directory"].mkdir()
    files["missing"] = d / "missing.jpg"
    if not IS_ROOT:
        files["unreadable"] = d / "unreadable.jpg"
        files["unreadable"].write_bytes(jpg)
        files["unreadable"].chmod(0)
    return files


EXPECTED_REASON = {
    "zero_byte": "empty file",
    "truncated_jpeg": "truncated",
    "truncated_png": "",
    "corrupt_png": "",
    "text_as_jpg": "not a recognized image",
    "directory": "directory",
    "missing": "not found",
    "unreadable": "permission denied",
}


def test_every_bad_input_is_recorded_and_the_rest_finishes(bad_dir, tmp_path):
    names = list(bad_dir)
    paths = [str(bad_dir[n]) for n in names]
    f = Featurizer(cache=tmp_path / "c.h5", **RANDOM)
    res = f.featurize(paths)
    by_path = {x["path"]: x["reason"] for x in res.failures}
    for name, path in zip(names, paths):
        if name.startswith("good"):
            assert path not in by_path
            continue
        assert path in by_path, f"{name} was not reported"
        assert EXPECTED_REASON[name] in by_path[path], (name, by_path[path])
    assert res.summary["failed"] == len(names) - 2
    assert res.summary["featurized"] == 2
    assert res.ok.tolist() == [n.startswith("good") for n in names]
    assert np.isfinite(res.features[res.ok]).all() and np.isnan(res.features[~res.ok]).all()


def test_unreadable_file_is_reported_even_as_root(tmp_path, monkeypatch):
    """Root reads any file, so simulate EACCES at open() to cover the 'unreadable' case."""
    p = tmp_path / "locked.jpg"
    p.write_bytes(_jpeg_bytes(sample_photo("coins")))
    real_open = open

    def fake_open(file, *a, **k):
        if os.fspath(file) == str(p):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    res = Featurizer(**RANDOM).featurize([str(p)])
    assert res.failures[0]["reason"] == "permission denied"


def test_cache_hit_miss_changed_and_duplicate(photo_dir, tmp_path):
    imgs = tmp_path / "imgs"
    shutil.copytree(photo_dir, imgs)
    paths = sorted(str(p) for p in imgs.iterdir())
    cache = tmp_path / "c.h5"

    first = Featurizer(cache=cache, **RANDOM).featurize(paths)
    assert first.summary["featurized"] == len(paths) and first.summary["cached"] == 0

    # hit: a fresh featurizer (fresh process state) runs the network on nothing
    f2 = Featurizer(cache=cache, **RANDOM)
    again = f2.featurize(paths)
    assert again.summary["featurized"] == 0 and again.summary["cached"] == len(paths)
    assert f2.forward_passes == 0 and not f2.built, "the model must not even be built"
    np.testing.assert_array_equal(first.features, again.features)

    # duplicate: the same bytes under another name are featurized once, and share features
    dup = imgs / "copy_of_chelsea.jpg"
    shutil.copy(imgs / "chelsea.jpg", dup)
    res = Featurizer(cache=cache, **RANDOM).featurize([*paths, str(dup)])
    assert res.summary["featurized"] == 0 and res.summary["cached"] == len(paths)
    assert res.summary["deduplicated"] == 1
    np.testing.assert_array_equal(res.features[-1], res.features[paths.index(str(imgs / "chelsea.jpg"))])

    # changed content under the same path is featurized again
    Image.fromarray(np.fliplr(sample_photo("chelsea")).copy()).save(imgs / "chelsea.jpg")
    res = Featurizer(cache=cache, **RANDOM).featurize(paths)
    assert res.summary["featurized"] == 1 and res.summary["cached"] == len(paths) - 1
    assert not np.allclose(res.features[paths.index(str(imgs / "chelsea.jpg"))], first.features[paths.index(str(imgs / "chelsea.jpg"))])


def test_adding_ten_images_featurizes_ten(many_photos, tmp_path):
    cache = tmp_path / "c.h5"
    paths = [str(p) for p in many_photos]
    Featurizer(cache=cache, **RANDOM).featurize(paths[:30])
    res = Featurizer(cache=cache, **RANDOM).featurize(paths[:40])
    assert (res.summary["featurized"], res.summary["cached"]) == (10, 30)


def test_counts_partition_the_inputs(bad_dir, photo_dir, tmp_path):
    paths = [str(p) for p in bad_dir.values()] + [str(p) for p in sorted(photo_dir.iterdir())]
    paths += paths[-2:]  # duplicates
    s = Featurizer(cache=tmp_path / "c.h5", **RANDOM).featurize(paths).summary
    assert s["total"] == s["featurized"] + s["cached"] + s["deduplicated"] + s["failed"]


def test_layer_and_pool_are_separate_feature_spaces_in_one_file(photo_dir, tmp_path):
    from deepfeat.featurize import FeatureCache

    paths = sorted(str(p) for p in photo_dir.iterdir())[:3]
    cache = tmp_path / "c.h5"
    a = Featurizer(cache=cache, **RANDOM)
    b = Featurizer(cache=cache, layer="layer3", pool="max", **RANDOM)
    c = Featurizer(cache=cache, layer="layer3", pool="avg", **RANDOM)
    assert len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3
    fa, fb, fc = (x.featurize(paths).features for x in (a, b, c))
    assert fa.shape == (3, 512) and fb.shape == (3, 256) and fc.shape == (3, 256)
    assert not np.allclose(fb, fc)
    spaces = FeatureCache(cache).spaces()
    assert sorted(s["layer"] for s in spaces.values()) == ["layer3", "layer3", "penultimate"]
    assert all(s["rows"] == 3 for s in spaces.values())


def test_storage_dtype_is_a_property_of_the_stored_space(photo_dir, tmp_path):
    """float16 rows written first are found by a float32 reader (and extended in float16)."""
    from deepfeat.featurize import FeatureCache

    paths = sorted(str(p) for p in photo_dir.iterdir())
    cache = tmp_path / "c.h5"
    half = Featurizer(cache=cache, storage_dtype="float16", **RANDOM)
    full = Featurizer(cache=cache, storage_dtype="float32", **RANDOM)
    assert half.fingerprint == full.fingerprint
    f16 = half.featurize(paths[:3]).features
    res = full.featurize(paths)  # three found, the rest computed and stored as float16
    assert res.summary["cached"] == 3 and res.summary["featurized"] == len(paths) - 3
    np.testing.assert_array_equal(res.features[:3], f16)
    spaces = FeatureCache(cache).spaces()
    assert [s["dtype"] for s in spaces.values()] == ["float16"]
    again = Featurizer(cache=cache, **RANDOM).featurize(paths)
    assert again.summary["featurized"] == 0
    np.testing.assert_array_equal(again.features, res.features)  # new rows were rounded like the old


def test_in_memory_inputs_pil_and_numpy(tmp_path):
    arr = sample_photo("rocket")
    f = Featurizer(cache=tmp_path / "c.h5", **RANDOM)
    res = f.featurize([arr, Image.fromarray(arr), arr.astype(np.float32) / 255.0, np.zeros((0, 3), np.uint8)])
    assert res.ok.tolist() == [True, True, True, False]
    np.testing.assert_allclose(res.features[0], res.features[1], rtol=1e-5)
    assert "array" in res.failures[0]["reason"]


def test_cli_featurize_json_summary_and_strict(bad_dir, tmp_path, capsys):
    src = str(bad_dir["good_jpg"].parent)
    argv = ["featurize", src, "--cache", str(tmp_path / "c.h5"), "--backbone", "torchvision:resnet18",
            "--weights", "none", "--device", "cpu", "--json", "-q"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("featurized", "cached", "failed", "failures", "images_per_second"):
        assert key in out
    assert out["featurized"] == 2 and out["failed"] == len(bad_dir) - 4  # 2 good; the dir is walked, missing is not listed
    assert all({"path", "reason"} <= set(f) for f in out["failures"])
    assert main([*argv, "--strict"]) == 1
    out2 = json.loads(capsys.readouterr().out)
    assert out2["featurized"] == 0 and out2["cached"] == 2


def test_cli_reports_bad_arguments_without_traceback(tmp_path, capsys):
    code = main(["featurize", str(tmp_path / "nope"), "--cache", str(tmp_path / "c.h5"), "--json"])
    assert code == 1
    captured = capsys.readouterr()
    assert "no such file or folder" in json.loads(captured.out)["error"]
    assert "Traceback" not in captured.err


def test_cli_backbones_layers(capsys):
    assert main(["backbones", "torchvision:resnet18", "--layers", "--json"]) == 0
    rows = {r["layer"]: r["dim"] for r in json.loads(capsys.readouterr().out)["layers"]}
    assert rows["layer3"] == 256 and rows["layer4"] == 512
