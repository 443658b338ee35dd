"""Any number of classes: tables built in one go, reports and plots that stay readable."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_variants

from deepfeat.classify.metrics import MAX_PRINTED_MATRIX, evaluation_report, format_report
from deepfeat.pipelines import plots

N_FIT_CLASSES = 120  # above pandas' fragmentation warning (100 inserted columns)


@pytest.fixture(scope="module")
def many_class_model(photo_dir, tmp_path_factory):
    """A real fit on 120 classes of two crops each (made-up labels: the fit, not its accuracy,
    is under test), with the cheapest search."""
    from deepfeat.classify import EmbeddingClassifier, ImageEmbedder, TransferClassifier

    d = tmp_path_factory.mktemp("many_classes")
    paths = make_variants(photo_dir, d / "img", 2 * N_FIT_CLASSES)
    labels = [f"class_{i // 2:03d}" for i in range(len(paths))]
    clf = TransferClassifier(ImageEmbedder(device="cpu", cache=str(d / "c.h5")),
                             EmbeddingClassifier("logreg", preprocessing="none", cv=2, honest=False), spaces=None)
    clf.fit([str(p) for p in paths], labels)
    return clf, [str(p) for p in paths], labels


@pytest.mark.filterwarnings("error::pandas.errors.PerformanceWarning")
def test_predict_table_has_every_class_and_no_fragmentation(many_class_model):
    clf, paths, _ = many_class_model
    table = clf.predict_table(paths[:10] + ["/no/such/file.jpg"])
    proba_cols = [c for c in table.columns if c.startswith("proba_")]
    assert len(proba_cols) == N_FIT_CLASSES == len(clf.classes_)
    assert list(table.columns) == ["path", "label", *proba_cols, "status"]
    ok = table["status"] == "ok"
    assert ok.sum() == 10 and not ok.iloc[-1]
    np.testing.assert_allclose(table.loc[ok, proba_cols].sum(axis=1), 1.0, atol=1e-6)
    assert table.loc[~ok, proba_cols].isna().all(axis=None)
    # the probabilities are the model's, column by column
    np.testing.assert_allclose(table.loc[ok, proba_cols].to_numpy(), clf.predict_proba(paths[:10]),
                               rtol=1e-6)


@pytest.mark.parametrize("n", [100, 257, 1000])
def test_text_report_lists_confusions_instead_of_an_unreadable_matrix(n):
    rng = np.random.default_rng(n)
    labels = [f"c{i:04d}" for i in range(n)]
    y = np.repeat(labels, 2)
    pred = y.copy()
    wrong = rng.choice(len(y), size=len(y) // 10, replace=False)
    pred[wrong] = rng.choice(labels, size=len(wrong))
    report = evaluation_report(y, pred, labels=labels)
    assert np.asarray(report["confusion_matrix"]).shape == (n, n)
    json.dumps(report)  # --json holds the whole matrix
    text = format_report(report)
    lines = text.splitlines()
    assert max(len(line) for line in lines) < 120  # no n-column rows
    assert len(lines) < n + 40  # one line per class plus a bounded list of confusions
    assert "commonest confusions" in text
    true, got = y[wrong[0]], pred[wrong[0]]
    if true != got:
        assert any(line.strip().startswith(f"{true} -> ") for line in lines) or len(wrong) > 20


def test_text_report_of_few_classes_keeps_the_matrix():
    labels = [f"c{i}" for i in range(MAX_PRINTED_MATRIX)]
    text = format_report(evaluation_report(labels, labels[1:] + labels[:1], labels=labels))
    assert "confusion matrix (rows: true, columns: predicted)" in text
    assert "commonest" not in text


@pytest.mark.parametrize("n", [100, 1000])
def test_confusion_plot_of_many_classes_shows_the_most_confused(n, tmp_path):
    from matplotlib.figure import Figure

    labels = [f"c{i:04d}" for i in range(n)]
    y = np.repeat(labels, 3)
    pred = y.copy()
    confused = [7, n // 2, n - 1]  # the classes that get errors
    for c in confused:
        pred[3 * c] = labels[(c + 1) % n]
    shown = {}
    orig = Figure.savefig

    def spy(fig, *a, **k):
        ax = fig.axes[0]
        shown["ticks"] = [t.get_text() for t in ax.get_xticklabels()]
        shown["title"] = ax.get_title()
        return orig(fig, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", spy)
        out = plots.plot_confusion(y, pred, labels, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 0 and out.endswith("cm.png")
    assert len(shown["ticks"]) <= plots.MAX_CONFUSION_CLASSES
    for c in confused:  # the confused classes and their confusions are all shown
        assert labels[c] in shown["ticks"] and labels[(c + 1) % n] in shown["ticks"]
    assert f"of {n} classes" in shown["title"]


def test_most_confused_negative_control():
    cm = np.diag([5, 5, 5, 5])
    assert plots.most_confused(cm, 2) == [0, 1]  # no errors: the first ones, not random ones
    cm[3, 2] = 4
    assert plots.most_confused(cm, 2) == [2, 3]
