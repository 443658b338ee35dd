"""``deepfeat suggest`` and the fewer-labels paths of ``deepfeat fit`` through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_classify_images import shared_cache_path, write_digits, write_lfw

from deepfeat.cli.main import main

FAST = ["--device", "cpu", "-q"]


@pytest.fixture(scope="module", autouse=True)
def _private_trust_store(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPFEAT_TRUST_STORE", str(tmp_path_factory.mktemp("trust") / "trusted.txt"))
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """pool/ (20 faces + 20 non-faces, unlabelled, one face copied twice), one/ (one
    labelled image per class), test/ (10 + 10)."""
    lfw = write_lfw(tmp_path_factory.mktemp("lfw"))
    root = tmp_path_factory.mktemp("label")
    for cls in ("face", "nonface"):
        files = sorted((lfw / cls).iterdir())
        (root / "one" / cls).mkdir(parents=True)
        shutil.copy(files[0], root / "one" / cls / files[0].name)
        (root / "test" / cls).mkdir(parents=True)
        for f in files[30:40]:
            shutil.copy(f, root / "test" / cls / f.name)
        (root / "pool").mkdir(exist_ok=True)
        for f in files[1:21]:
            shutil.copy(f, root / "pool" / f"{cls}_{f.name}")
    for cls in ("face", "nonface"):  # few/: 4 labelled images per class
        (root / "few" / cls).mkdir(parents=True)
        for f in sorted((lfw / cls).iterdir())[40:44]:
            shutil.copy(f, root / "few" / cls / f.name)
    for k in range(2):  # exact copies of one pool image
        shutil.copy(root / "pool" / "face_001.png", root / "pool" / f"copy{k}.png")
    write_digits(root / "digits", 4)  # another data set: 40 digit images
    return {"root": root, "cache": Path(shared_cache_path(tmp_path_factory))}


def _run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_suggest_first_writes_ranked_picks_and_a_contact_sheet(data, tmp_path, capsys):
    out = tmp_path / "picks" / "picks.csv"
    code, stdout, err = _run(["suggest", str(data["root"] / "pool"), "--n", "22", "--cache",
                              str(data["cache"]), "--out", str(out), "--json", *FAST], capsys)
    assert code == 0, err
    r = json.loads(stdout)
    table = pd.read_csv(out)
    assert list(table.columns) == ["path", "rank", "action", "reason"]
    assert table["rank"].tolist() == list(range(1, 23)) and r["strategy"] == "first"
    copies = {"face_001.png", "copy0.png", "copy1.png"}
    assert sum(Path(p).name in copies for p in table.path) <= 1  # exact duplicates: one at most
    assert table.reason.str.contains("typical").all()
    html = (out.parent / "picks.html").read_text()
    assert html.count("<figure") == 22 and "data:image/jpeg;base64," in html


def test_suggest_next_from_labelled_items(data, tmp_path, capsys):
    out = tmp_path / "next.csv"
    code, stdout, err = _run(["suggest", str(data["root"] / "pool"), "--n", "5", "--labeled",
                              str(data["root"] / "one"), "--cache", str(data["cache"]), "--out",
                              str(out), *FAST], capsys)
    assert code == 0, err
    table = pd.read_csv(out)
    label = table[table.action == "label"]
    assert len(label) == 5 and label.reason.str.contains("uncertain between").all()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n", "0"], "--n: must be an integer >= 1"),
        (["--n", "500"], "n=500 is more than"),
        (["--model", "m.joblib", "--labeled", "x"], "not allowed with argument"),
        (["--out", "picks.txt"], "--out must name a .csv file"),
    ],
)
def test_suggest_parameter_errors_exit_2_with_one_line(data, extra, message, capsys):
    code, _, err = _run(["suggest", str(data["root"] / "pool"), "--cache", str(data["cache"]),
                         *extra, *FAST], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_one_label_per_class_fits_and_every_later_step_works(data, tmp_path, capsys):
    from deepfeat.cli.cmd_fit import format_text

    model = tmp_path / "one.joblib"
    code, out, err = _run(["fit", str(data["root"] / "one"), "--cache", str(data["cache"]),
                           "--out", str(model), "--json", *FAST], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["n_splits"] == 0 and r["best"]["head"] == "logreg" and "no_estimate" in r
    assert len(r["spaces_tried"]) == 1  # nothing to choose between: the first space only
    text = format_text(r)
    assert "no estimate" in text and "single labelled example" in text and "untuned" in text

    preds = tmp_path / "preds.csv"
    code, _, err = _run(["predict", str(model), str(data["root"] / "test"), "--out", str(preds), *FAST], capsys)
    assert code == 0, err
    table = pd.read_csv(preds)
    assert set(table.label) == {"face", "nonface"} and (table.status == "ok").all()
    code, out, err = _run(["evaluate", str(model), str(data["root"] / "test"), "--json", *FAST], capsys)
    assert code == 0, err
    assert json.loads(out)["accuracy"] > 0.5  # better than chance from two labels

    from fastapi.testclient import TestClient

    from deepfeat.serve import create_app, load_predictor

    with TestClient(create_app(load_predictor(model))) as client:
        info = client.get("/model")
        assert info.status_code == 200 and info.json()["training"]["cv_score"] is None
        img = (data["root"] / "test" / "face").iterdir().__next__().read_bytes()
        res = client.post("/predict", files=[("files", ("a.png", img, "application/octet-stream"))])
        assert res.status_code == 200 and res.json()["results"][0]["label"] in ("face", "nonface")


@pytest.mark.slow
def test_one_label_per_class_model_exports_to_onnx(data, tmp_path, capsys):
    model = tmp_path / "one.joblib"
    assert main(["fit", str(data["root"] / "one"), "--cache", str(data["cache"]), "--out", str(model), *FAST]) == 0
    code, _, err = _run(["export", str(model), "--out", str(tmp_path / "one.onnx"), "-q"], capsys)
    assert code == 0, err


def test_unlabeled_from_another_data_set_is_refused_and_changes_nothing(data, tmp_path, capsys):
    common = ["--cache", str(data["cache"]), "--heads", "logreg", "--select", "none", "--json", *FAST]
    code, out, err = _run(["fit", str(data["root"] / "few"), "--out", str(tmp_path / "plain.joblib"), *common],
                          capsys)
    assert code == 0, err
    code, out, err = _run(["fit", str(data["root"] / "few"), "--out", str(tmp_path / "semi.joblib"),
                           "--unlabeled", str(data["root"] / "digits"), *common], capsys)
    assert code == 0, err
    u = json.loads(out)["unlabeled"]
    assert u["used"] is None and u["reason"].startswith("refused") and u["n_pool"] == 40
    import numpy as np

    from deepfeat.classify.persistence import load

    test = sorted(str(p) for p in (data["root"] / "test").rglob("*.png"))
    plain, semi = (load(tmp_path / f"{m}.joblib") for m in ("plain", "semi"))
    np.testing.assert_array_equal(plain.predict_proba(test), semi.predict_proba(test))


@pytest.mark.slow
def test_unlabeled_from_the_same_data_set_is_weighed_and_stated(data, tmp_path, capsys):
    code, out, err = _run(["fit", str(data["root"] / "few"), "--out", str(tmp_path / "m.joblib"),
                           "--unlabeled", str(data["root"] / "pool"), "--cache", str(data["cache"]),
                           "--heads", "logreg", "--select", "none", *FAST], capsys)
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("unlabelled items (42)"))
    assert "95 % interval" in line and ("used label_spreading" in line or "not used" in line)
