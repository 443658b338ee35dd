"""``deepfeat experiment`` on texts: baselines TF-IDF and random weights, the audit, the report."""

from __future__ import annotations

import pandas as pd
import pytest
from text_data import RUNTIME, sentiment, text_cache

from deepfeat.exceptions import InvalidParameterError
from deepfeat.pipelines.experiment import run_experiment

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    X, y = sentiment()
    root = tmp_path_factory.mktemp("text-exp")
    # one exact duplicate with the same label, one with the other label (a conflict)
    df = pd.DataFrame({"text": [*X, X[0], X[1]], "label": [*y, y[0], "negative" if y[1] == "positive" else "positive"]})
    df.to_csv(root / "sentiment.csv", index=False)
    return run_experiment(root / "sentiment.csv", root / "report", shots=(12,), repeats=2,
                          cache=text_cache(tmp_path_factory), featurizer_options=RUNTIME)


def test_verdicts_against_tfidf_and_random_weights(result):
    names = [s.name for s in result.spaces]
    assert names == ["minilm", "minilm[random]", "tfidf"]
    assert any("TF-IDF" in v for v in result.verdicts) and any("random weights" in v for v in result.verdicts)
    acc = result.summary.set_index(["space", "shots"])["mean"]
    assert acc[("minilm", "12")] > acc[("tfidf", "12")] and acc[("minilm", "12")] > acc[("minilm[random]", "12")]


def test_the_audit_finds_the_duplicate_and_the_conflict(result):
    c = result.audit.counts()
    assert c["exact_within_class"] >= 1 and c["exact_conflicting_labels"] >= 1


def test_the_report_shows_texts(result):
    X, _ = sentiment()
    html = result.report_html.read_text()
    assert "misclassified held-out texts" in html and "Duplicate and near-duplicate texts" in html
    assert X[1].replace("'", "&#x27;") in html or X[1] in html


def test_an_image_backbone_on_texts_is_refused(tmp_path):
    X, y = sentiment()
    pd.DataFrame({"text": X, "label": y}).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(InvalidParameterError, match="holds texts, but backbone efficientnet_lite0 reads images"):
        run_experiment(tmp_path / "s.csv", tmp_path / "r", backbones=["minilm", "efficientnet_lite0"])
