"""Serving a text model: ``POST /predict`` with ``{"texts": [...]}``, the page's text box, a fresh process."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from serve_models import free_port, start_server
from text_data import QUICK, RUNTIME, split, text_cache

from deepfeat.classify import EmbeddingClassifier, TextEmbedder, TransferClassifier, save

pytest.importorskip("transformers")
pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A sentiment model on MiniLM side by side with TF-IDF (both kinds of part are served)."""
    d = split()
    clf = TransferClassifier(TextEmbedder("minilm", cache=text_cache(tmp_path_factory), **RUNTIME),
                             EmbeddingClassifier(**QUICK), spaces=[[{}, {"backbone": "tfidf"}]]).fit(d["X"], d["y"])
    path = tmp_path_factory.mktemp("text-serve") / "sentiment.joblib"
    save(clf, path)  # .joblib written here: in the trust list
    return path


@pytest.fixture(scope="module")
def client(model_path):
    from fastapi.testclient import TestClient

    from deepfeat.serve import create_app, load_predictor

    with TestClient(create_app(load_predictor(model_path))) as c:
        yield c


def test_texts_are_labelled_as_the_model_labels_them(client, model_path):
    from deepfeat.classify import load

    d = split()
    texts = list(d["X_test"][:6])
    r = client.post("/predict", json={"texts": texts})
    assert r.status_code == 200
    doc = r.json()
    want = load(model_path).predict_proba(texts)
    got = np.array([[row["probabilities"][c] for c in ("negative", "positive")] for row in doc["results"]])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_bad_items_get_a_400_each_and_the_others_an_answer(client):
    r = client.post("/predict", json={"texts": ["a wonderful film", "   ", 42]})
    doc = r.json()
    assert r.status_code == 200 and doc["n_ok"] == 1
    assert [(x["code"], x.get("error")) for x in doc["results"][1:]] == [
        (400, "whitespace-only text"), (400, "not a text (got int)")]


def test_bad_requests_are_refused_and_the_server_keeps_serving(client):
    assert client.post("/predict", files={"files": ("a.png", b"x")}).status_code == 415
    assert client.post("/predict", json={"images": []}).status_code == 400
    assert client.post("/predict", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/predict", json={"texts": ["fine"]}).status_code == 200


def test_the_model_and_the_page_say_text(client):
    m = client.get("/model").json()
    assert m["modality"] == "text" and m["classes"] == ["negative", "positive"]
    assert 'id="textbox"' in client.get("/").text


@pytest.mark.slow  # a server process importing torch and loading the encoder: ~20 s
def test_served_in_a_fresh_process(model_path):
    port = free_port()
    proc = start_server([str(model_path), "--device", "cpu"], port)
    try:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=json.dumps({"texts": ["I loved every minute of it",
                                                                           "awful, a waste of money"]}).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            doc = json.loads(r.read())
        assert [x["label"] for x in doc["results"]] == ["positive", "negative"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_export_of_a_text_model_is_one_clear_line(tmp_path, capsys):
    """ONNX export is for image models: a text model is refused by name, nothing written."""
    from text_data import split

    from deepfeat.classify import EmbeddingClassifier, TransferClassifier, save
    from deepfeat.cli.main import main

    d = split()
    m = TransferClassifier("tfidf", EmbeddingClassifier("logreg", cv=3), spaces=None).fit(list(d["X"]), d["y"])
    save(m, tmp_path / "t.joblib")
    code = main(["export", str(tmp_path / "t.joblib"), "--out", str(tmp_path / "t.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "image models only" in err[0], err
    assert not (tmp_path / "t.onnx").exists()
