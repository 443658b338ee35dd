"""``deepfeat fit --finetune`` on texts: the contrastive fine-tune, then the head search on the
tuned encoder as a checkpoint; the model predicts like any text model, and a rerun resumes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from text_data import split

from deepfeat.cli.main import main

pytest.importorskip("transformers")

FAST = ["--heads", "logreg", "--device", "cpu", "--precision", "fp32", "--cv", "3", "--select", "none"]


def test_fit_finetune_on_texts_tunes_the_encoder_and_predicts(tmp_path, capsys):
    d = split()
    pd.DataFrame({"text": d["X"][:24], "label": d["y"][:24]}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"text": d["X_test"]}).to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "m.joblib"
    argv = ["fit", str(tmp_path / "train.csv"), "--out", str(out), "--finetune", "--cache",
            str(tmp_path / "c.h5"), *FAST, "--json"]
    assert main(argv) == 0
    fit = json.loads(capsys.readouterr().out)
    tuned = fit["finetune"]
    assert tuned["steps_run"] > 0 and tuned["resumed_from"] == 0
    assert fit["recipe"][0]["checkpoint"] == tuned["checkpoint"]  # the head sits on the tuned encoder
    # the same command again resumes: no step is trained twice
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)["finetune"]
    assert again["steps_run"] == 0 and again["resumed_from"] == tuned["steps_run"]
    assert main(["predict", str(out), str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.csv"), "-q"]) == 0
    pred = pd.read_csv(tmp_path / "p.csv")
    acc = float(np.mean(pred["label"].to_numpy() == d["y_test"]))
    majority = max(np.mean(d["y_test"] == c) for c in np.unique(d["y_test"]))
    assert acc > majority + 0.1, (acc, majority)  # learnt from 24 labels, not the class rates


def test_finetune_on_texts_refuses_another_encoder(tmp_path, capsys):
    d = split()
    pd.DataFrame({"text": d["X"][:12], "label": d["y"][:12]}).to_csv(tmp_path / "train.csv", index=False)
    code = main(["fit", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m.joblib"), "--finetune",
                 "--backbone", "tfidf", *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "minilm" in err[0], err
    assert not (tmp_path / "m.joblib").exists()
