"""``deepfeat fit / predict / evaluate`` on texts: a CSV in, a model, predictions, a report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from text_data import split, text_cache

from deepfeat.cli.main import main

pytest.importorskip("transformers")

FAST = ["--heads", "logreg", "--device", "cpu", "--precision", "fp32", "--cv", "3", "--select", "none"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = split()
    root = tmp_path_factory.mktemp("text-cli")
    # other column names than the defaults, as a user's export would have
    pd.DataFrame({"review": d["X"], "sentiment": d["y"]}).to_csv(root / "train.csv", index=False)
    test = pd.DataFrame({"review": list(d["X_test"]) + ["   "], "sentiment": list(d["y_test"]) + ["positive"]})
    test.to_csv(root / "test.csv", index=False)
    (root / "new.txt").write_text("what a lovely, friendly place\n\nthe worst phone I ever bought\n")
    return {"train": root / "train.csv", "test": root / "test.csv", "new": root / "new.txt",
            "cache": Path(text_cache(tmp_path_factory)), "root": root}


def _json(args: list[str], capsys) -> tuple[int, dict]:
    code = main([*args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.fixture(scope="module")
def model(files) -> Path:
    path = files["root"] / "m.joblib"
    code = main(["fit", str(files["train"]), "--out", str(path), "--cache", str(files["cache"]),
                 "--text-column", "review", "--label-column", "sentiment", "-q", *FAST])
    assert code == 0
    return path


def test_fit_predict_evaluate_on_a_csv(model, files, capsys):
    code, r = _json(["predict", str(model), str(files["new"]), "--out", str(files["root"] / "p.csv"), "-q"], capsys)
    assert code == 0 and r["n_ok"] == 2 and r["failures"][0]["path"] == "line 2"
    table = pd.read_csv(files["root"] / "p.csv")
    assert table["label"].tolist()[:2] == ["positive", "negative"]
    assert list(table.columns[:3]) == ["row", "text", "label"]
    code, r = _json(["evaluate", str(model), str(files["test"]), "--text-column", "review",
                     "--label-column", "sentiment", "-q"], capsys)
    assert code == 0 and r["accuracy"] >= 0.75 and r["n_failed"] == 1
    last = len(pd.read_csv(files["test"])) + 1  # the header is line 1
    assert r["failures"] == [{"path": f"line {last}", "reason": "whitespace-only text"}]


def test_a_second_fit_encodes_nothing(model, files, capsys, tmp_path):
    code, r = _json(["fit", str(files["train"]), "--out", str(tmp_path / "again.joblib"), "--cache",
                     str(files["cache"]), "--text-column", "review", "--label-column", "sentiment", "-q",
                     *FAST], capsys)
    assert code == 0 and r["modality"] == "text"
    assert r["featurize"]["featurized"] == 0 and r["featurize"]["cached"] == r["n_images"]


def test_mismatched_sources_and_missing_columns_get_one_line(model, files, capsys, photo_dir):
    code = main(["fit", str(files["train"]), "--out", "x.joblib", "--backbone", "efficientnet_lite0",
                 "--text-column", "review", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"deepfeat fit: error: {files['train']} holds texts, but --backbone "
                                 "efficientnet_lite0 reads images: use a text encoder such as --backbone "
                                 "minilm (the default for texts)"]
    code = main(["fit", str(files["train"]), "--out", "x.joblib", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].endswith("missing column(s) 'text', 'label'; columns found: review, sentiment. "
                                          "Use --text-column/--label-column to name them.")
    code = main(["predict", str(model), str(photo_dir), "--out", "x.csv", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "holds images" in err[-1] and "reads texts" in err[-1]


def test_featurize_then_fit_encodes_nothing_the_second_time(files, capsys, tmp_path):
    cache = str(tmp_path / "c.h5")
    code, r = _json(["featurize", str(files["train"]), "--text-column", "review", "--cache", cache,
                     "--device", "cpu", "--precision", "fp32", "-q"], capsys)
    assert code == 0 and r["modality"] == "text" and r["featurized"] == r["total"] > 0
    code, r = _json(["fit", str(files["train"]), "--out", str(tmp_path / "m.joblib"), "--cache", cache,
                     "--text-column", "review", "--label-column", "sentiment", "-q", *FAST], capsys)
    assert code == 0 and r["featurize"]["featurized"] == 0


def test_a_txt_listing_of_image_files_is_not_read_as_texts(photo_dir, tmp_path):
    from deepfeat.featurize.text_sources import is_text_source

    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in sorted(photo_dir.iterdir())[:3]) + "\n")
    assert not is_text_source(listing)
    assert not is_text_source(tmp_path / "t.txt")  # no such file
    (tmp_path / "t.txt").write_text("a sentence\nanother one\n")
    assert is_text_source(tmp_path / "t.txt")
