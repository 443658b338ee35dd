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


@pytest.mark.slow  # fine-tunes MiniLM on every draw: about a minute
def test_frozen_and_finetune_strategies_on_texts_pair_the_same_draws(tmp_path_factory):
    """--strategies frozen,finetune on texts: the contrastive fine-tune on every draw, paired
    with the frozen encoder's rows; a second run reads the finished draws back."""
    from deepfeat.pipelines.strategies import FINETUNE, FROZEN

    X, y = sentiment()
    root = tmp_path_factory.mktemp("text-strategies")
    pd.DataFrame({"text": X, "label": y}).to_csv(root / "s.csv", index=False)
    kw = dict(shots=(4,), repeats=2, baselines=(), strategies="frozen,finetune", select="auto",
              cache=text_cache(tmp_path_factory), featurizer_options=RUNTIME)
    res = run_experiment(root / "s.csv", root / "report", **kw)
    t = res.strategies.table
    assert set(t.space) == {FROZEN, FINETUNE}
    pairs = t.pivot_table(index="repeat", columns="space", values="n_test")
    assert len(pairs) == 2 and (pairs[FROZEN] == pairs[FINETUNE]).all()  # the same held-out texts
    assert (t[t.space == FINETUNE].accuracy > 0).all()
    assert "fine-tuned (contrastive)" in res.strategies.finetune_label
    # --select auto on texts: fit's own choice among the text spaces, made inside each draw
    assert res.labels_space == "auto" and "auto" in set(res.table.space)
    again = run_experiment(root / "s.csv", root / "report", **kw).strategies.table
    assert again[again.space == FINETUNE].accuracy.tolist() == t[t.space == FINETUNE].accuracy.tolist()
    # read back, not trained again: the recorded training times are the first run's
    assert again[again.space == FINETUNE].fit_seconds.tolist() == t[t.space == FINETUNE].fit_seconds.tolist()
