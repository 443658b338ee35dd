"""The user's path, end to end, with defaults: a folder of real photos -> ``fit`` (no
options) -> ``predict`` -> ``serve`` (every test image POSTed) -> ``export`` ->
``serve --runtime onnx`` -> the page in a browser; and the Python API
(``TransferClassifier`` -> skops -> served).

The default fit on a handful of photos chooses whatever its rule chooses (with the cost
rule, usually the cheapest space); the second case fits the kind of space the default
fit chooses on larger data -- networks with different input sizes, flip-averaged, joined
-- so that the multi-geometry path is walked here too. A change to any default that
breaks a later step fails this test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from serve_models import free_port, start_server
from test_serve_browser import CHROMIUM, DRIVER, browser  # noqa: F401 - the fixture, found by name

from deepfeat.classify import TransferClassifier, load, save
from deepfeat.cli.main import main
from deepfeat.serve.predictors import load_predictor

#: The kind of space ``fit`` chooses by default on oxford17: networks of different input
#: sizes (224 and 240 pixels), each flip-averaged, joined (both parts are also default
#: candidates, so the first case's cache already holds them).
MULTI_PART = [{"backbone": "efficientnet_lite0", "tta": "flip"}, {"backbone": "efficientnet_lite1", "tta": "flip"}]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path]:
    """scikit-image's LFW faces and non-faces: 8 of each to train on, 4 of each to test."""
    from skimage.data import lfw_subset

    imgs = [(a * 255).round().astype(np.uint8) for a in lfw_subset()]
    root = tmp_path_factory.mktemp("user_path")
    for split, offset, n in (("train", 0, 8), ("test", 50, 4)):
        for label, start in (("face", 0), ("nonface", 100)):
            d = root / split / label
            d.mkdir(parents=True)
            for i in range(start + offset, start + offset + n):
                Image.fromarray(imgs[i]).save(d / f"{label}{i:03d}.png")
    return root / "train", root / "test"


def _cli(capsys, *argv: str) -> dict:
    capsys.readouterr()
    code = main([*argv, "--json", "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


@pytest.fixture(scope="module")
def models(photos, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """``defaults``: ``deepfeat fit TRAIN --out M`` and nothing else; ``multi_part``: the
    Python API with the multi-geometry space, saved with skops."""
    train, _ = photos
    d = tmp_path_factory.mktemp("models")
    buf = io.StringIO()  # a module fixture cannot take capsys
    with contextlib.redirect_stdout(buf):
        code = main(["fit", str(train), "--out", str(d / "default.joblib"), "--json", "-q"])
    assert code == 0, buf.getvalue()
    fit_json = json.loads(buf.getvalue())
    paths = sorted(str(p) for p in train.rglob("*.png"))
    labels = [Path(p).parent.name for p in paths]
    clf = TransferClassifier(spaces=[MULTI_PART]).fit(paths, labels)
    save(clf, d / "multi.skops")
    return {"defaults": (d / "default.joblib", fit_json), "multi_part": (d / "multi.skops", {})}


def _post_all(url: str, images: list[Path]) -> dict[str, dict]:
    import httpx

    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in images]
    r = httpx.post(url + "predict", files=files, timeout=300)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["n_ok"] == len(images), doc
    return {row["name"]: row for row in doc["results"]}


def _served(args: list[str], images: list[Path]) -> tuple[dict[str, dict], dict, dict]:
    import httpx

    port = free_port()
    proc = start_server(args, port)
    try:
        url = f"http://127.0.0.1:{port}/"
        answers = _post_all(url, images)
        health = httpx.get(url + "health", timeout=30).json()
        info = httpx.get(url + "model", timeout=30).json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return answers, health, info


@pytest.mark.parametrize("case", ["defaults", "multi_part"])
def test_fit_predict_serve_export_serve_onnx(case, models, photos, tmp_path, capsys):
    model_path, fit_json = models[case]
    _, test = photos
    images = sorted(test.rglob("*.png"))
    model = load(model_path)
    if case == "defaults":
        # fit states what the chosen space costs, and what every candidate costs
        assert fit_json["cost"]["forward_passes"] == model.cost_["forward_passes"] >= 1
        assert all("forward_passes" in s for s in fit_json["spaces_tried"] if s["status"] == "cross-validated")
    else:
        assert model.cost_["forward_passes"] == 4  # two networks, each on the image and its mirror
        assert len(load_predictor(model_path).inputs) == 2  # 224 and 240 pixel crops

    # predict: the CSV's labels and probabilities, and the throughput of the run
    pred = _cli(capsys, "predict", str(model_path), str(test), "--out", str(tmp_path / "p.csv"))
    assert pred["n_ok"] == len(images) and pred["throughput"]["images_per_second"] > 0
    table = pd.read_csv(tmp_path / "p.csv").set_index("path")
    want_label = {Path(p).name: str(v) for p, v in table["label"].items()}
    classes = [str(c) for c in model.classes_]
    want = {Path(p).name: row[[f"proba_{c}" for c in classes]].to_numpy(float) for p, row in table.iterrows()}
    # a guard against a test that cannot fail: the photos do not all get one answer
    assert len(set(want_label.values())) == 2

    # serve (torch): every test image answered, as predict answered it
    answers, health, info = _served([str(model_path)], images)
    for name, row in answers.items():
        assert row["label"] == want_label[name]
        np.testing.assert_allclose([row["probabilities"][c] for c in classes], want[name], atol=1e-3)
    assert health["throughput"]["images"] == len(images) and health["throughput"]["images_per_second"] > 0
    assert info["cost"]["forward_passes"] == model.cost_["forward_passes"]

    # export -> serve --runtime onnx: the same labels (Pillow makes the crops, not torch)
    onnx_path = tmp_path / "model.onnx"
    # (--no-check: the ONNX server's answers below are the check, against predict itself)
    exported = _cli(capsys, "export", str(model_path), "--format", "onnx", "--out", str(onnx_path), "--no-check")
    assert len(exported["inputs"]) == len(load_predictor(model_path).inputs)
    answers, _, info = _served([str(onnx_path), "--runtime", "onnx"], images)
    assert {n: r["label"] for n, r in answers.items()} == want_label
    for name, row in answers.items():
        np.testing.assert_allclose([row["probabilities"][c] for c in classes], want[name], atol=2e-2)
    assert len(info["inputs"]) == len(exported["inputs"])


def test_the_page_labels_a_photo_with_the_default_model(models, photos, request):
    """The browser step (tests/test_serve_browser.py's chromium), on the default fit's model."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.skip(f"needs Debian's chromium and chromedriver ({CHROMIUM}, {DRIVER})")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    driver = request.getfixturevalue("browser")
    model_path, _ = models["defaults"]
    photo = sorted(photos[1].rglob("*.png"))[0]
    want = str(load(model_path).predict([str(photo)])[0])
    port = free_port()
    proc = start_server([str(model_path)], port)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 30).until(lambda d: "classes" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "file").send_keys(str(photo))
        label = WebDriverWait(driver, 60).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, "[data-role=label]")))
        assert label.text.split()[0] == want
    finally:
        proc.terminate()
        proc.wait(timeout=30)
