"""``deepfeat export --format onnx``: parity with deepfeat's own predictions on real photos,
exact heads, refusals by name, and ``serve --runtime onnx`` without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import sample_photo
from PIL import Image
from serve_models import fit_tiny
from sklearn.datasets import load_digits

from deepfeat.classify import EmbeddingClassifier, ImageEmbedder, TransferClassifier, load, save
from deepfeat.cli.main import main
from deepfeat.export import ExportRefused, export_onnx, metadata_of
from deepfeat.export.head import head_module
from deepfeat.featurize.decode import decode_image
from deepfeat.featurize.preprocess import Preprocess
from deepfeat.serve.pixels import to_model_input

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "horse", "camera")


def _lfw() -> tuple[list[np.ndarray], np.ndarray]:
    from skimage.data import lfw_subset

    imgs = [(a * 255).round().astype(np.uint8) for a in lfw_subset()]
    return imgs, np.array(["face"] * 100 + ["nonface"] * 100)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """efficientnet_lite0 (offline ImageNet weights) + logreg on lfw faces, saved and exported."""
    imgs, y = _lfw()
    train = list(range(0, 20)) + list(range(100, 120))
    clf = TransferClassifier(ImageEmbedder(device="cpu", precision="fp32", num_workers=0), EmbeddingClassifier("logreg"),
                             spaces=None)
    clf.fit([imgs[i] for i in train], y[train])
    d = tmp_path_factory.mktemp("export")
    save(clf, d / "faces.joblib")
    code = main(["export", str(d / "faces.joblib"), "--format", "onnx", "--out", str(d / "faces.onnx"), "-q"])
    assert code == 0
    return d / "faces.joblib", d / "faces.onnx"


def _test_images() -> list[Image.Image]:
    imgs, _ = _lfw()
    photos = [decode_image(sample_photo(n)) for n in PHOTOS]
    return photos + [decode_image(imgs[i]) for i in (50, 60, 150, 160)]


def test_onnx_matches_deepfeat_on_real_photos(exported):
    model_path, onnx_path = exported
    model = load(model_path)
    images = _test_images()
    want = model.predict_proba(images)
    assert 0.02 < want[:, 0].std(), "the photos must not all get the same answer"
    pre = Preprocess.from_dict(model.featurizer_spec_["preprocess"])
    crops = np.stack([pre.geometry(im).numpy() for im in images])
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"pixels": crops})[0]
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-3
    # negative control: a graph fed unnormalised-looking input (inverted pixels) disagrees
    assert np.abs(sess.run(None, {"pixels": 255 - crops})[0] - want).max() > 1e-2
    # the serve path's Pillow geometry (no torch): pixels within a level or two, same answers
    pil = np.stack([to_model_input(im, pre.to_dict()) for im in images])
    assert np.abs(pil.astype(int) - crops.astype(int)).max() <= 2
    got_pil = sess.run(None, {"pixels": pil})[0]
    # Pillow's resampling is not torch's (deepfeat resizes only the crop window, on a grid
    # aligned to 0.01 source pixel): a level or two apart, probabilities within 5e-3 here
    assert np.abs(got_pil - want).max() <= 5e-3
    assert (got_pil.argmax(1) == want.argmax(1)).all()


def test_metadata_makes_the_file_self_describing(exported):
    _, onnx_path = exported
    meta = metadata_of(onnx_path)
    assert meta["classes"] == ["face", "nonface"]
    assert meta["preprocess"]["crop"] == [224, 224]
    assert meta["feature_recipe"]["backbone"] == "efficientnet_lite0"
    assert "logreg" in meta["training"]["summary"] and meta["created"]
    (inp,) = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_inputs()
    assert inp.type == "tensor(uint8)" and inp.shape[1:] == [3, 224, 224]


@pytest.mark.parametrize("preprocessing", ["standardize", "l2+pca_whiten"])
@pytest.mark.parametrize("heads", ["logreg", "linsvm"])
def test_heads_are_exported_exactly(heads, preprocessing, tmp_path):
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    clf = EmbeddingClassifier(heads=heads, preprocessing=preprocessing, param_grid={heads: {"C": [0.1]}}, cv=3)
    clf.fit(X[:300], y[:300])
    head = head_module(clf.best_estimator_, 10)
    want = clf.predict_proba(X[300:400])
    with torch.no_grad():
        got = head(torch.from_numpy(X[300:400])).numpy()
    assert np.abs(got - want).max() < 1e-5
    assert 0.05 < want.max(axis=1).min(), "probabilities must not be trivially one-hot"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, as deepfeat uses it
        torch.onnx.export(head, (torch.from_numpy(X[:2]),), tmp_path / "h.onnx", dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})
    sess = ort.InferenceSession(str(tmp_path / "h.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(None, {"x": X[300:400]})[0] - want).max() < 1e-4
    if heads == "linsvm":  # negative control: another temperature gives other probabilities
        clf.best_estimator_[-1].temperature_ *= 2
        assert np.abs(head_module(clf.best_estimator_, 10)(torch.from_numpy(X[300:400])).detach().numpy() - want).max() > 1e-3


def test_kernel_svm_is_refused_by_name(tmp_path, capsys):
    path = fit_tiny(tmp_path / "rbf.joblib", heads="rbfsvm")
    with pytest.raises(ExportRefused, match=r"SVC\(kernel='rbf'\) cannot be exported"):
        export_onnx(load(path), tmp_path / "x.onnx")
    assert main(["export", str(path), "--out", str(tmp_path / "x.onnx"), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kernel SVM" in err[0] and "--heads logreg,linsvm" in err[0]
    assert not (tmp_path / "x.onnx").exists()


TORCH_FREE = textwrap.dedent(
    """
    import json, sys
    from fastapi.testclient import TestClient
    from deepfeat.serve import create_app, load_predictor
    app = create_app(load_predictor(sys.argv[1], runtime="onnx"))
    with TestClient(app) as c, open(sys.argv[2], "rb") as fh:
        r = c.post("/predict", files=[("files", ("photo.jpg", fh.read(), "image/jpeg"))])
        model = c.get("/model").json()
    print(json.dumps({"status": r.status_code, "result": r.json()["results"][0],
                      "runtime": model["runtime"], "torch": "torch" in sys.modules,
                      "sklearn": "sklearn" in sys.modules}))
    """
)


def test_serve_runtime_onnx_does_not_import_torch(exported, tmp_path):
    model_path, onnx_path = exported
    photo = tmp_path / "chelsea.jpg"
    Image.fromarray(sample_photo("chelsea")).save(photo, quality=95)
    out = subprocess.run([sys.executable, "-c", TORCH_FREE, str(onnx_path), str(photo)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["torch"] is False and doc["sklearn"] is False
    assert doc["status"] == 200 and doc["runtime"] == "onnx"
    want = load(model_path).predict_proba([str(photo)])[0]
    got = np.array([doc["result"]["probabilities"][c] for c in ("face", "nonface")])
    assert np.abs(got - want).max() <= 1e-3
    # the `deepfeat` command itself imports only the subcommand it runs
    cli_out = subprocess.run([sys.executable, "-c", "import sys\nfrom deepfeat.cli.main import main"
                              "\ntry: main(['serve', '--help'])\nexcept SystemExit: pass"
                              "\nprint('torch' in sys.modules)"],
                             capture_output=True, text=True, timeout=120)
    assert "--runtime" in cli_out.stdout and cli_out.stdout.strip().endswith("False")


@pytest.mark.slow
def test_bench_part_reports_onnxruntime_beside_torch(tmp_path):
    from deepfeat.benchmarking.onnx_runtime import measure_onnx_runtime

    imgs = [sample_photo(n) for n in ("chelsea", "coffee", "astronaut")]
    r = measure_onnx_runtime("torchvision:mobilenet_v3_small", imgs, tmp_path, repeats=1, weights=None)
    assert r["torch_images_per_second"] > 0 and r["onnxruntime_images_per_second"] > 0
    assert r["onnxruntime_vs_torch"] == pytest.approx(
        r["onnxruntime_images_per_second"] / r["torch_images_per_second"], rel=0.01
    )
    assert r["max_abs_diff"] < 1e-3  # the same network in both runtimes


def test_the_pillow_crops_follow_a_squash_crop_mode():
    """timm's ``squash`` (both sides to ``resize``) made without torch for ``--runtime onnx``."""
    from PIL import ImageFilter

    p = Preprocess(resize=236, crop=(224, 224), interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3,
                   crop_mode="squash")
    img = Image.fromarray(sample_photo("astronaut")).resize((640, 400)).filter(ImageFilter.GaussianBlur(1))
    want = p.geometry(img).numpy().astype(int)
    assert np.abs(to_model_input(img, p.to_dict()).astype(int) - want).max() <= 2
    # control: the aspect-keeping geometry is another crop
    centre = {k: v for k, v in p.to_dict().items() if k != "crop_mode"}
    assert np.abs(to_model_input(img, centre).astype(int) - want).mean() > 5
