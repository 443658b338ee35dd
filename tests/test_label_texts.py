"""``deepfeat suggest`` on texts: a CSV of texts in, ranked texts and a contact sheet out."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from text_data import sentiment, text_cache

from deepfeat.cli.main import main

pytest.importorskip("transformers")


def test_suggest_texts_first_then_next_from_labelled_texts(tmp_path, tmp_path_factory, capsys):
    X, y = sentiment()
    # the pool repeats a text: an exact duplicate is never picked twice
    pool = pd.DataFrame({"text": [*X[20:], X[20]]})
    pool.to_csv(tmp_path / "pool.csv", index=False)
    pd.DataFrame({"text": X[:20], "label": y[:20]}).to_csv(tmp_path / "labelled.csv", index=False)
    common = ["--cache", text_cache(tmp_path_factory), "--device", "cpu", "--precision", "fp32", "--json"]
    assert main(["suggest", str(tmp_path / "pool.csv"), "--n", "8", "--out", str(tmp_path / "a.csv"), *common]) == 0
    first = json.loads(capsys.readouterr().out)
    picks = pd.read_csv(tmp_path / "a.csv")
    assert first["strategy"] == "first" and list(picks.columns[:2]) == ["text", "rank"]
    assert len(picks) == 8 and picks.text.is_unique and set(picks.text) <= set(pool.text)
    sheet = (tmp_path / "a.html").read_text()
    assert "unreadable" not in sheet  # the texts themselves are shown
    assert main(["suggest", str(tmp_path / "pool.csv"), "--n", "5", "--labeled", str(tmp_path / "labelled.csv"),
                 "--out", str(tmp_path / "b.csv"), *common]) == 0
    nxt = json.loads(capsys.readouterr().out)
    assert nxt["strategy"] == "next" and nxt["n_picked"] == 5
    assert set(pd.read_csv(tmp_path / "b.csv").query("action == 'label'").text) <= set(pool.text)


def test_suggest_texts_with_an_image_backbone_is_one_line(tmp_path, capsys):
    X, _ = sentiment()
    pd.DataFrame({"text": X[:10]}).to_csv(tmp_path / "pool.csv", index=False)
    code = main(["suggest", str(tmp_path / "pool.csv"), "--backbone", "efficientnet_lite0",
                 "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "texts" in err[0], err
    assert not (tmp_path / "p.csv").exists()


def test_acquisition_experiment_reads_texts(tmp_path, tmp_path_factory):
    """experiment --acquisition on a CSV of texts: simulated rounds on the encoder's rows."""
    from deepfeat.label.experiment import run_acquisition

    X, y = sentiment()
    pd.DataFrame({"text": X, "label": y}).to_csv(tmp_path / "s.csv", index=False)
    res = run_acquisition(str(tmp_path / "s.csv"), str(tmp_path / "acq"), strategies=["random", "first"],
                          shots=[2], repeats=2, cache=text_cache(tmp_path_factory), unlabeled=False,
                          featurizer_options={"device": "cpu", "precision": "fp32"})
    table = pd.read_csv(res["table"])
    assert set(table.strategy) == {"random", "first"} and table.accuracy.between(0, 1).all()
    assert res["n_pool"] + res["n_test"] == len(X)
