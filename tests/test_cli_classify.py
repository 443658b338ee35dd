"""``deepfeat fit``, ``predict`` and ``evaluate`` driven on folders of real images."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
from pathlib import Path

import joblib
import pandas as pd
import pytest
from test_classify_images import shared_cache_path, write_lfw

from deepfeat.cli.main import main

FIT_FAST = ["--heads", "logreg", "--device", "cpu"]


@pytest.fixture(scope="module", autouse=True)
def _private_trust_store(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPFEAT_TRUST_STORE", str(tmp_path_factory.mktemp("trust") / "trusted.txt"))
        yield


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train/ (12 faces, 12 non-faces), test/ (10 + 10, plus a broken file and a Thumbs.db)."""
    lfw = write_lfw(tmp_path_factory.mktemp("lfw"))
    root = tmp_path_factory.mktemp("cli")
    for cls in ("face", "nonface"):
        files = sorted((lfw / cls).iterdir())
        for split, chunk in (("train", files[:12]), ("test", files[12:22])):
            (root / split / cls).mkdir(parents=True)
            for f in chunk:
                shutil.copy(f, root / split / cls / f.name)
    (root / "test" / "face" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "test" / "nonface" / "Thumbs.db").write_bytes(b"\0" * 64)
    return {
        "train": root / "train",
        "test": root / "test",
        "cache": Path(shared_cache_path(tmp_path_factory)),
    }


def _run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def fitted(folders, tmp_path_factory) -> tuple[Path, dict]:
    """``deepfeat fit train/ --json``: the saved model and what fit printed."""
    path = tmp_path_factory.mktemp("model") / "faces.joblib"
    buf = io.StringIO()  # a module fixture cannot take capsys
    with contextlib.redirect_stdout(buf):
        code = main(
            ["fit", str(folders["train"]), "--cache", str(folders["cache"]), "--out", str(path),
             "-q", "--json", *FIT_FAST]
        )
    assert code == 0, buf.getvalue()
    return path, json.loads(buf.getvalue())


@pytest.fixture(scope="module")
def model(fitted) -> Path:
    return fitted[0]


def test_fit_prints_the_best_pipeline_and_saves(folders, tmp_path, capsys):
    out_model = tmp_path / "m.joblib"
    args = [
        "fit",
        str(folders["train"]),
        "--cache",
        str(folders["cache"]),
        "--out",
        str(out_model),
        *FIT_FAST,
    ]
    code, out, err = _run(
        [*args, "--json", "--class-weight", "balanced", "--scoring", "balanced_accuracy"], capsys
    )
    assert code == 0, err
    r = json.loads(out)
    assert out_model.is_file() and r["model"] == str(out_model)
    assert r["classes"] == {"face": 12, "nonface": 12}
    # the default: 5 candidate spaces (penultimate, a late cut point, their concatenation,
    # the flip-averaged penultimate, the offline zoo's ensemble) x 2 preprocessings
    # (standardize, l2: "auto" on few images) x the 15-value compact logistic-regression
    # grid; every one of them is listed
    assert [s["status"] for s in r["spaces_tried"]] == ["cross-validated"] * 5
    assert any("[flip]" in s["space"] for s in r["spaces_tried"])
    ensemble = r["spaces_tried"][-1]["space"].split("+")
    assert {p.split("[")[0].split("@")[0] for p in ensemble} == {
        "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    assert r["n_candidates"] == 150 == len(r["candidates_tried"])
    assert r["space"] in {s["space"] for s in r["spaces_tried"]} and r["recipe"]
    assert r["part_norm"] == "l2"  # how a concatenated recipe's parts are joined
    assert 0 <= r["honest_score"] <= 1
    assert r["cv_score"] >= 0.9 and 0 <= r["cv_std"] <= 0.2  # measured 1.0 +/- 0.0
    assert r["best_params"]["head"] == "logreg" and "logreg" in r["best_pipeline"]
    assert "search" in err  # progress on stderr, not stdout
    # progress lines name the space they belong to
    assert all(" of " in ln for ln in err.splitlines() if "(preprocessing x fold) done" in ln)


def test_fit_best_line_starred_line_and_json_agree(folders, fitted, tmp_path, capsys):
    """The text of a fit against the --json of the same fit's arguments (the ``fitted``
    fixture's run), and without --scoring the score is called accuracy."""
    args = ["fit", str(folders["train"]), "--cache", str(folders["cache"]),
            "--out", str(tmp_path / "m.joblib"), "-q", *FIT_FAST]
    r = fitted[1]
    b = r["best"]
    chosen = [c for c in r["candidates_tried"] if c["chosen"]]
    assert len(chosen) == 1
    c = chosen[0]
    assert (c["space"], c["preprocess"], c["head"]) == (b["space"], b["preprocess"], b["head"]) == (
        r["space"], r["best_params"]["preprocess"], r["best_params"]["head"])
    assert c["C"] == b["C"] == r["best_params"]["C"]
    assert c["mean_cv_score"] == round(b["cv_score"], 4) == round(r["cv_score"], 4)
    assert b["calibration"]["log_loss_after"] <= b["calibration"]["log_loss_before"]
    code, text, _ = _run(args, capsys)
    assert code == 0 and text.startswith("best: efficientnet_lite0") and "CV balanced_accuracy" not in text
    best = next(ln for ln in text.splitlines() if ln.startswith("best: "))
    star = [ln for ln in text.splitlines() if ln.startswith(" * ")]
    assert len(star) == 1 and star[0].startswith(f" * {b['space']}: ")
    cand = f"{b['preprocess']} -> {b['head']}(C={b['C']:.3g})"
    score = f"{b['cv_score']:.4f}"
    assert f"{b['space']} -> {cand}; CV accuracy {score}" in best
    assert f"chosen CV {score} ({cand})" in star[0]
    assert "candidates (30 per space x 5 spaces)" in text  # the unit of each count is named
    assert "space parts x 24 images" in text and "embeddings computed" in text


def test_the_probabilities_line_says_whether_the_fitted_temperature_was_kept(fitted):
    from deepfeat.cli.cmd_fit import format_text

    r = copy.deepcopy(fitted[1])
    cal = r["best"]["calibration"]
    line = next(ln for ln in format_text(r).splitlines() if ln.startswith("probabilities: "))
    assert f"temperature {cal['temperature']:.3g} " in line
    assert ("did not lower" in line) == (cal["fitted_temperature"] != cal["temperature"])
    cal.update(temperature=1.0, fitted_temperature=1.3)  # no out-of-fold gain: T = 1 kept
    line = next(ln for ln in format_text(r).splitlines() if ln.startswith("probabilities: "))
    assert "temperature 1 (the head's own; 1.3 fitted out of fold did not lower the log-loss)" in line
    cal.update(temperature=0.7, fitted_temperature=0.7)
    line = next(ln for ln in format_text(r).splitlines() if ln.startswith("probabilities: "))
    assert "temperature 0.7 fitted out of fold;" in line


def test_fit_strict_fails_on_a_broken_image_reported_once(folders, tmp_path, capsys):
    train = tmp_path / "train"
    shutil.copytree(folders["train"], train)
    (train / "face" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    args = ["fit", str(train), "--cache", str(folders["cache"]), "--out", str(tmp_path / "m.joblib"),
            *FIT_FAST]
    code, out, err = _run([*args, "--strict"], capsys)
    assert code == 1 and (tmp_path / "m.joblib").is_file()
    assert err.count("broken.png") == 1, err  # once per run, not once per space part
    assert out.count("broken.png") == 1
    code, out, err = _run(args, capsys)  # negative control: without --strict it succeeds
    assert code == 0


def test_predict_writes_one_row_per_input_with_status(model, folders, tmp_path, capsys):
    csv = tmp_path / "pred.csv"
    code, out, err = _run(
        ["predict", str(model), str(folders["test"]), "--out", str(csv), "-q"], capsys
    )
    assert code == 0, err
    df = pd.read_csv(csv)
    assert list(df.columns) == ["path", "label", "proba_face", "proba_nonface", "status"]
    assert len(df) == 22  # 20 images + a broken PNG + a Thumbs.db
    status = dict(zip(df["path"].map(lambda p: Path(p).name), df["status"]))
    assert status["broken.png"] != "ok" and status["Thumbs.db"].startswith("skipped")
    ok = df[df["status"] == "ok"]
    assert len(ok) == 20
    truth = ok["path"].map(lambda p: Path(p).parent.name)
    assert (ok["label"] == truth).mean() >= 0.9  # measured 1.0 on these 20 held-out images
    assert ((ok["proba_face"] > 0.5) == (ok["label"] == "face")).all()
    code, _, err = _run(
        ["predict", str(model), str(folders["test"]), "--out", str(csv), "--strict", "-q"], capsys
    )
    assert code != 0
    code, _, _ = _run(
        ["predict", str(model), str(folders["test"] / "nonface"), "--out", str(csv), "--strict"],
        capsys,
    )
    assert code != 0  # the Thumbs.db is an input that got no label
    code, _, _ = _run(
        [
            "predict",
            str(model),
            str(folders["test"] / "face" / "012.png"),
            "--out",
            str(csv),
            "--strict",
        ],
        capsys,
    )
    assert code == 0 and len(pd.read_csv(csv)) == 1


def test_evaluate_reports_the_metrics(model, folders, capsys):
    code, out, err = _run(["evaluate", str(model), str(folders["test"]), "--json", "-q"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert {
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "per_class",
        "confusion_matrix",
        "labels",
    } <= set(r)
    assert r["labels"] == ["face", "nonface"] and r["n"] == 20 and r["n_failed"] == 1
    assert r["accuracy"] >= 0.9 and r["balanced_accuracy"] >= 0.9 and r["macro_f1"] >= 0.9
    cal = r["calibration"]
    assert cal["n"] == 20 and 0 <= cal["ece"] <= 1 and cal["log_loss"] > 0
    assert sum(b["n"] for b in cal["reliability"]) == 20
    assert sum(map(sum, r["confusion_matrix"])) == 20
    assert set(r["per_class"]["face"]) == {"precision", "recall", "f1", "support"}
    code, out, _ = _run(["evaluate", str(model), str(folders["test"]), "-q"], capsys)
    assert code == 0 and "confusion matrix" in out and "broken.png" in out
    assert "calibration error (ECE, 10 bins)" in out


def test_untrusted_pickle_needs_trust(model, folders, tmp_path, capsys):
    foreign = tmp_path / "downloaded.joblib"
    joblib.dump(joblib.load(model), foreign)
    csv = tmp_path / "p.csv"
    code, _, err = _run(
        ["predict", str(foreign), str(folders["test"] / "face"), "--out", str(csv)], capsys
    )
    assert code == 1 and "arbitrary code" in err and "Traceback" not in err
    code, _, err = _run(
        [
            "predict",
            str(foreign),
            str(folders["test"] / "face"),
            "--out",
            str(csv),
            "--trust",
            "-q",
        ],
        capsys,
    )
    assert code == 0, err


def test_skops_model_and_clear_errors(folders, tmp_path, capsys):
    path = tmp_path / "m.skops"
    code, _, err = _run(
        [
            "fit",
            str(folders["train"]),
            "--cache",
            str(folders["cache"]),
            "--out",
            str(path),
            "-q",
            *FIT_FAST,
        ],
        capsys,
    )
    assert code == 0, err
    code, out, err = _run(["evaluate", str(path), str(folders["test"]), "--json", "-q"], capsys)
    assert code == 0 and json.loads(out)["accuracy"] >= 0.9
    lonely = tmp_path / "lonely"
    shutil.copytree(folders["train"], lonely)
    for f in sorted((lonely / "nonface").iterdir())[1:]:
        f.unlink()
    code, out, err = _run(
        ["fit", str(lonely), "--out", str(tmp_path / "x.joblib"), "--json", *FIT_FAST], capsys
    )
    # one image in a class: the fixed head, no estimate (tests/test_label_cli.py goes on)
    assert code == 0 and "Traceback" not in err
    assert "single labelled example" in json.loads(out)["no_estimate"]


def test_a_model_predicts_from_another_folder_without_creating_files(
    folders, tmp_path, monkeypatch, capsys
):
    """A relative --cache is stored as an absolute path; predict elsewhere creates nothing there."""
    fit_dir, run_dir, out_dir = (tmp_path / d for d in ("fit", "elsewhere", "out"))
    for d in (fit_dir, run_dir, out_dir):
        d.mkdir()
    monkeypatch.chdir(fit_dir)
    code, _, err = _run(
        ["fit", str(folders["train"]), "--cache", "photos.h5", "--out", "m.joblib",
         "--select", "none", "-q", *FIT_FAST],
        capsys,
    )
    assert code == 0, err
    stored = joblib.load(fit_dir / "m.joblib")["model"].embedder.cache
    assert stored == str(fit_dir / "photos.h5")

    monkeypatch.chdir(run_dir)
    csv = out_dir / "pred.csv"
    code, _, err = _run(
        ["predict", str(fit_dir / "m.joblib"), str(folders["test"] / "face"), "--out", str(csv),
         "-q"],
        capsys,
    )
    assert code == 0, err
    assert list(run_dir.iterdir()) == []  # no photos.h5, no lock files
    ok = pd.read_csv(csv).query("status == 'ok'")
    assert len(ok) == 10 and (ok["label"] == "face").mean() >= 0.9

    # the same with the model's cache gone: a temporary cache, still nothing here
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in fit_dir.glob("photos.h5*"):  # the file, its segments and lock
        shutil.move(f, moved / f.name)
    code, _, err = _run(
        ["predict", str(fit_dir / "m.joblib"), str(folders["test"] / "face"), "--out", str(csv),
         "-q"],
        capsys,
    )
    assert code == 0, err
    assert list(run_dir.iterdir()) == []
    assert [p.name for p in fit_dir.iterdir()] == ["m.joblib"]  # not recreated there either
    from deepfeat.classify import load

    assert load(fit_dir / "m.joblib").embedder.cache is None  # the Python API forgets it too

    # positive control: a cache named on this call is created, where it is named
    code, _, err = _run(
        ["predict", str(fit_dir / "m.joblib"), str(folders["test"] / "face"), "--out", str(csv),
         "--cache", "here.h5", "-q"],
        capsys,
    )
    assert code == 0, err
    assert (run_dir / "here.h5").exists()


def test_fit_and_the_estimator_share_one_default_choice_of_spaces():
    from deepfeat.classify import TransferClassifier
    from deepfeat.classify.spaces import default_space_specs
    from deepfeat.cli.cmd_fit import candidate_spaces
    from deepfeat.cli.main import build_parser

    parser, _ = build_parser("fit")
    args = parser.parse_args(["fit", "src", "--out", "m.joblib"])
    est = TransferClassifier()
    assert candidate_spaces(args) == est.spaces == "auto"
    # the CLI's explicit route (--backbones) resolves to the same candidates as the default
    backbone = est.resolve_embedder().backbone
    args = parser.parse_args(["fit", "src", "--out", "m.joblib", "--backbones", backbone])
    assert TransferClassifier(spaces=candidate_spaces(args)).candidate_spaces() == est.candidate_spaces()
    assert len(est.candidate_spaces()) == len(default_space_specs([backbone])) > 1
    # negative control: --select none is the one space
    args = parser.parse_args(["fit", "src", "--out", "m.joblib", "--select", "none"])
    assert len(TransferClassifier(spaces=candidate_spaces(args)).candidate_spaces()) == 1
