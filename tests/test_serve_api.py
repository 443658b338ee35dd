"""``deepfeat serve``'s API driven in-process: predictions, every bad-input kind, the limits,
the API key, the trust rules, batching and a full queue."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_models import png, tone_images
from test_torture_inputs import EXPECTED, bomb_png, make_bad_inputs

from deepfeat.classify import load
from deepfeat.cli.main import main
from deepfeat.exceptions import InputError
from deepfeat.serve import ServeLimits, create_app, load_predictor

LIMITS = ServeLimits(max_files=4, max_pixels=2_000_000, max_upload_bytes=1_000_000, max_queue=16)


@pytest.fixture(scope="module")
def model_path(tiny_model_path) -> Path:
    return tiny_model_path


@pytest.fixture(scope="module")
def predictor(model_path):
    return load_predictor(model_path)


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, limits=LIMITS)) as c:
        yield c


def files(*items: tuple[str, bytes]) -> list:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def test_predicts_each_image_as_the_saved_model_does(client, model_path):
    X, y = tone_images(3, seed=7)  # images the model was not fitted on
    r = client.post("/predict", files=files(*((f"{i}.png", png(a)) for i, a in enumerate(X[2:6]))))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [row["label"] for row in doc["results"]] == y[2:6]
    assert {row["label"] for row in doc["results"]} == {"dark", "light"}  # not one constant answer
    want = load(model_path).predict_proba(X[2:6])
    got = np.array([[row["probabilities"][c] for c in ("dark", "light")] for row in doc["results"]])
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert [row["name"] for row in doc["results"]] == ["0.png", "1.png", "2.png", "3.png"]
    assert doc["n_ok"] == 4 and doc["n_failed"] == 0


def test_json_base64_gives_the_same_answers_and_a_bad_item_its_own_status(client):
    X, _ = tone_images(2, seed=3)
    imgs = [png(X[0]), png(X[-1])]
    multi = client.post("/predict", files=files(("a", imgs[0]), ("b", imgs[1]))).json()
    doc = {
        "images": [
            {"name": "a", "data": base64.b64encode(imgs[0]).decode()},
            "data:image/png;base64," + base64.b64encode(imgs[1]).decode(),
            {"name": "broken", "data": "not base64 !!"},
            {"name": "no data"},
        ]
    }
    r = client.post("/predict", json=doc)
    assert r.status_code == 200
    rows = r.json()["results"]
    assert [row["status"] for row in rows] == ["ok", "ok", "error", "error"]
    for got, want in zip(rows[:2], multi["results"]):
        assert got["label"] == want["label"]
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-9)
    assert rows[2]["code"] == 400 and "base64" in rows[2]["error"]
    assert rows[3]["code"] == 400


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, bytes]:
    paths = make_bad_inputs(tmp_path_factory.mktemp("torture") / "in")
    return {k: Path(p).read_bytes() for k, p in paths.items() if Path(p).is_file()}


def test_every_bad_input_kind_gets_its_own_status_and_the_server_carries_on(client, bad_files):
    assert len(bad_files) >= 20
    kinds = sorted(bad_files)
    seen: dict[str, dict] = {}
    step = LIMITS.max_files - 1
    good = png(tone_images(1)[0][0])
    for start in range(0, len(kinds), step):
        chunk = kinds[start : start + step]
        # a good image in each request: it is answered whatever its neighbours are
        r = client.post("/predict", files=files(*((k, bad_files[k]) for k in chunk), ("good", good)))
        rows = r.json()["results"]
        assert r.status_code == 200 and rows[-1]["label"] == "dark", rows[-1]
        for row in rows[:-1]:
            seen[row["name"]] = row
    for kind in kinds:
        row, want = seen[kind], EXPECTED[kind]
        if want is None:
            assert row["status"] == "ok", f"{kind}: {row}"
            assert sum(row["probabilities"].values()) == pytest.approx(1.0)
        else:
            assert row["status"] == "error", f"{kind} should fail: {row}"
            assert row["code"] == (413 if "bomb" in kind else 400), row
            assert want in row["error"], f"{kind}: {row['error']!r} lacks {want!r}"
    # not wedged: nothing left queued, and the next request is answered
    assert client.get("/health").json()["queued_images"] == 0
    r = client.post("/predict", files=files(("after", png(tone_images(1)[0][1]))))
    assert r.status_code == 200 and r.json()["results"][0]["label"] == "light"


def test_pixel_limit_is_checked_from_the_header(client):
    r = client.post("/predict", files=files(("bomb.png", bomb_png(3000, 3000))))
    assert r.status_code == 413  # the only image failed with 413: so does the request
    row = r.json()["results"][0]
    assert row["code"] == 413 and "9,000,000 pixels exceeds the limit of 2,000,000" in row["error"]
    ok = client.post("/predict", files=files(("small.png", bomb_png(1000, 1000))))
    assert ok.json()["results"][0]["code"] != 413  # under the limit: decoded (it is truncated)


def test_request_limits(client):
    one = png(tone_images(1)[0][0])
    r = client.post("/predict", files=files(*((f"{i}", one) for i in range(LIMITS.max_files + 1))))
    assert r.status_code == 413 and "at most 4 (max_files)" in r.json()["detail"]
    big = b"\0" * (LIMITS.max_upload_bytes + 1)
    r = client.post("/predict", files=files(("big.png", big)))
    assert r.status_code == 413 and "max_upload_bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit applies as the body arrives
        for _ in range(40):
            yield b"x" * 50_000

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.post("/predict", json={"images": []}).status_code == 400
    assert client.post("/predict", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    r = client.post("/predict", content=one, headers={"content-type": "image/png"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    assert client.post("/predict", files=files(("e.png", b""))).json()["results"][0]["error"] == "empty file (0 bytes)"


def test_names_are_echoed_never_opened(client, tmp_path, model_path):
    real = str(model_path)  # an existing file on the server: must not be read
    names = [real, "../../../../etc/passwd", "<img src=x onerror=alert(1)>.png"]
    r = client.post("/predict", files=files(*((n, b"") for n in names)))
    rows = r.json()["results"]
    assert [row["name"] for row in rows] == names
    assert all(row["error"] == "empty file (0 bytes)" for row in rows)


def test_health_model_and_docs(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["runtime"] == "torch" and h["limits"]["max_files"] == 4
    m = client.get("/model").json()
    assert m["classes"] == ["dark", "light"]
    assert m["feature_recipe"]["backbone"] == "torchvision:mobilenet_v3_small"
    assert "logreg" in m["training"]["summary"] and m["training"]["n_images"] == 12
    assert m["created"] and m["input"]["crop"] == [224, 224]
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    page = client.get("/").text
    assert "<script" in page and "http://" not in page and "https://" not in page  # no CDN


def test_api_key_guards_every_prediction_route(predictor):
    one = png(tone_images(1)[0][0])
    with TestClient(create_app(predictor, limits=LIMITS, api_key="s3cret-key")) as c:
        for route in ("/predict", "/model"):
            call = (lambda h, r=route: c.post(r, files=files(("a", one)), headers=h)) if route == "/predict" else (lambda h, r=route: c.get(r, headers=h))
            assert call({}).status_code == 401
            assert call({"X-API-Key": "s3cret-kez"}).status_code == 401
            assert call({"X-API-Key": "s3cret-key"}).status_code == 200
            assert call({"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert c.get("/health").json()["api_key_required"] is True
        assert c.get("/").status_code == 200


def test_untrusted_pickle_is_refused(model_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEEPFEAT_TRUST_STORE", str(tmp_path / "empty-trust.txt"))
    import uvicorn

    def must_not_serve(*a, **k):  # noqa: ANN002, ANN003, ANN202 - were the model loaded, fail fast
        raise AssertionError("an untrusted model was served")

    monkeypatch.setattr(uvicorn, "run", must_not_serve)
    with pytest.raises(InputError, match="refusing to load this pickle"):
        load_predictor(model_path)
    assert main(["serve", str(model_path), "--port", "0", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to load this pickle" in err[0]
    assert load_predictor(model_path, trusted=True).classes == ["dark", "light"]


def test_wrong_runtime_for_the_file_is_one_clear_error(model_path, capsys):
    with pytest.raises(InputError, match="--runtime onnx serves a .onnx file"):
        load_predictor(model_path, runtime="onnx")
    assert main(["serve", str(model_path), "--max-files", "0", "-q"]) == 2  # a bad argument
    assert "max_files must be a positive integer" in capsys.readouterr().err


class Recorder:
    """A predictor that labels each image by its mean pixel value and records batch sizes."""

    runtime = "test"
    preprocess = {"crop": [8, 8], "resize": 8, "interpolation": "bilinear"}

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay, self.gate, self.sizes = delay, gate, []

    def prepare(self, img):  # noqa: ANN001, ANN201
        return np.asarray(img.resize((8, 8)), dtype=np.uint8).transpose(2, 0, 1)

    def predict(self, batch):  # noqa: ANN001, ANN201
        self.sizes.append(len(batch))
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay)
        return [{"label": int(b.mean().round()), "probabilities": None} for b in batch]

    def describe(self):  # noqa: ANN201
        return {"classes": []}


async def _post_many(app, bodies: list[bytes]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        return await asyncio.gather(
            *(c.post("/predict", files=files(("x.png", b))) for b in bodies)
        )


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer():
    rec = Recorder(delay=0.05)
    app = create_app(rec, limits=ServeLimits(max_batch=8, batch_wait_ms=50, max_queue=64))
    values = list(range(10, 250, 20))
    bodies = [png(np.full((8, 8, 3), v, np.uint8)) for v in values]
    responses = asyncio.run(_post_many(app, bodies))
    assert [r.json()["results"][0]["label"] for r in responses] == values
    assert max(rec.sizes) > 1 and max(rec.sizes) <= 8 and sum(rec.sizes) == len(values)


def test_full_queue_answers_503_with_retry_after_and_recovers():
    gate = threading.Event()
    rec = Recorder(gate=gate)
    app = create_app(rec, limits=ServeLimits(max_batch=1, batch_wait_ms=0, max_queue=2))
    body = png(np.full((8, 8, 3), 100, np.uint8))

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            held = [asyncio.ensure_future(c.post("/predict", files=files(("x", body)))) for _ in range(2)]
            for _ in range(200):  # until both are admitted (the worker stuck on the first)
                if app.state.batcher.pending == 2:
                    break
                await asyncio.sleep(0.05)
            refused = await c.post("/predict", files=files(("y", body)))
            gate.set()
            done = await asyncio.gather(*held)
            after = await c.post("/predict", files=files(("z", body)))
            return refused, done, after

    refused, done, after = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "at most 2" in refused.json()["detail"]
    assert [r.status_code for r in done] == [200, 200]
    assert after.status_code == 200 and app.state.batcher.pending == 0


def test_a_failing_batch_answers_500_per_image_and_the_worker_survives():
    class Flaky(Recorder):
        def predict(self, batch):  # noqa: ANN001, ANN201
            if not self.sizes:
                self.sizes.append(len(batch))
                raise RuntimeError("boom")
            return super().predict(batch)

    app = create_app(Flaky(), limits=ServeLimits(batch_wait_ms=0))
    body = png(np.full((8, 8, 3), 50, np.uint8))
    first, second = asyncio.run(_post_many(app, [body])), asyncio.run(_post_many(app, [body]))
    row = first[0].json()["results"][0]
    assert first[0].status_code == 500 and row["code"] == 500 and "boom" in row["error"]
    assert second[0].status_code == 200 and second[0].json()["results"][0]["label"] == 50


def test_serve_limits_validate():
    with pytest.raises(ValueError, match="max_queue"):
        ServeLimits(max_queue=0)
    with pytest.raises(ValueError, match="batch_wait_ms"):
        ServeLimits(batch_wait_ms=-1)


def test_a_request_cancelled_while_queued_gives_its_room_back():
    gate = threading.Event()
    rec = Recorder(gate=gate)
    app = create_app(rec, limits=ServeLimits(max_batch=1, batch_wait_ms=0, max_queue=4))
    body = png(np.full((8, 8, 3), 100, np.uint8))

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            first = asyncio.ensure_future(c.post("/predict", files=files(("a", body))))
            second = asyncio.ensure_future(c.post("/predict", files=files(("b", body), ("c", body))))
            for _ in range(200):  # until the worker holds "a" and "b", "c" wait in the queue
                if app.state.batcher.queued == 2:
                    break
                await asyncio.sleep(0.05)
            assert app.state.batcher.pending == 3 and app.state.batcher.queued == 2
            second.cancel()  # the client goes away
            await asyncio.sleep(0.05)
            gate.set()
            await first
            for _ in range(50):
                if app.state.batcher.pending == 0:
                    break
                await asyncio.sleep(0.05)
            return (await c.post("/predict", files=files(("d", body)))).status_code

    assert asyncio.run(scenario()) == 200
    # the room is back whether or not the worker reached "b", "c" before their cancellation
    # (skipping them then is an optimisation, not a promise)
    assert app.state.batcher.pending == 0 and app.state.batcher.queued == 0
    assert 2 <= len(rec.sizes) <= 4


def test_only_loopback_counts_as_local():
    from deepfeat.cli.cmd_serve import _is_loopback

    assert all(_is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "localhost"))
    assert not any(_is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org"))


def test_a_large_jpeg_is_decoded_as_featurizing_decodes_it(client, model_path, tmp_path):
    from conftest import sample_photo
    from PIL import Image

    path = tmp_path / "big.jpg"
    Image.fromarray(sample_photo("astronaut")).resize((1400, 1400)).save(path, quality=90)
    r = client.post("/predict", files=files(("big.jpg", path.read_bytes())))
    got = r.json()["results"][0]["probabilities"]
    want = load(model_path).predict_proba([str(path)])[0]  # featurize: JPEG draft decoding
    np.testing.assert_allclose([got["dark"], got["light"]], want, atol=1e-5)


def test_a_concatenated_flip_averaged_space_is_served_as_the_model_predicts(tmp_path):
    """The model `fit --select auto` may choose: several parts, one of them flip-averaged.
    Serving embeds every part (negative control: the first part alone is another input)."""
    from serve_models import TINY

    from deepfeat.classify import EmbeddingClassifier, ImageEmbedder, TransferClassifier, save

    X, y = tone_images(6)
    spaces = [[{"backbone": TINY["backbone"], "weights": None},
               {"backbone": TINY["backbone"], "weights": None, "layer": "features.9", "tta": "flip"}]]
    clf = TransferClassifier(ImageEmbedder(**TINY), EmbeddingClassifier("logreg"), spaces=spaces).fit(X, y)
    assert "+" in clf.space_ and "[flip]" in clf.space_
    save(clf, tmp_path / "concat.joblib")
    predictor = load_predictor(str(tmp_path / "concat.joblib"))
    assert len(predictor.featurizers) == 2
    Xt, _ = tone_images(2, seed=11)  # 4 images: the limit per request
    with TestClient(create_app(predictor, limits=LIMITS)) as c:
        r = c.post("/predict", files=files(*((f"{i}.png", png(a)) for i, a in enumerate(Xt))))
    assert r.status_code == 200, r.text
    got = np.array([[row["probabilities"][k] for k in ("dark", "light")] for row in r.json()["results"]])
    np.testing.assert_allclose(got, load(tmp_path / "concat.joblib").predict_proba(Xt), atol=1e-4)
    crops = np.stack([predictor.prepare(predictor_image(a)) for a in Xt])
    assert predictor.embed(crops).shape[1] > predictor.featurizers[0].embed_pixels(crops).shape[1]
    from deepfeat.export import export_onnx

    # the ONNX graph holds both parts, the flip and the per-part scaling
    export_onnx(load(tmp_path / "concat.joblib"), tmp_path / "x.onnx")
    onnx = load_predictor(str(tmp_path / "x.onnx"), runtime="onnx")
    got_onnx = np.array([[r["probabilities"][k] for k in ("dark", "light")] for r in onnx.predict(crops)])
    np.testing.assert_allclose(got_onnx, got, atol=1e-3)


def predictor_image(a: np.ndarray):  # noqa: ANN201 - PIL image
    from PIL import Image

    return Image.fromarray(a)
