"""Calibrated probabilities from every head the search can choose (temperature, out of fold)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification

from deepfeat.classify import EmbeddingClassifier
from deepfeat.classify.calibration import first_covering, fit_temperature
from deepfeat.classify.metrics import calibration_report, expected_calibration_error


def _data(seed: int = 0):
    X, y = make_classification(
        900, n_features=40, n_informative=12, n_classes=4, n_clusters_per_class=1,
        class_sep=1.2, flip_y=0.02, random_state=seed,
    )
    return X[:300], y[:300], X[300:], y[300:]


@pytest.mark.parametrize("head, C", [("logreg", 1e-3), ("linsvm", 1.0)])
def test_a_badly_scaled_head_is_calibrated_on_held_out_rows(head, C):
    Xtr, ytr, Xte, yte = _data()
    kw = {"heads": head, "preprocessing": "standardize", "param_grid": {head: {"C": [C]}}}
    cal = EmbeddingClassifier(**kw).fit(Xtr, ytr)
    after = calibration_report(yte, cal.predict_proba(Xte), cal.classes_)
    assert after["ece"] < 0.06
    assert cal.calibration_["log_loss_after"] <= cal.calibration_["log_loss_before"]
    if head == "logreg":  # negative control: the head's own probabilities, far too flat
        raw = EmbeddingClassifier(**kw, calibrate=False).fit(Xtr, ytr)
        before = calibration_report(yte, raw.predict_proba(Xte), raw.classes_)
        assert before["ece"] > 0.2 and after["log_loss"] < before["log_loss"]
        np.testing.assert_array_equal(raw.predict(Xte), cal.predict(Xte))  # labels unchanged
        assert raw.calibration_ is None
    assert (cal.predict(Xte) == cal.classes_[cal.predict_proba(Xte).argmax(axis=1)]).all()


def test_the_temperature_stays_at_one_when_it_does_not_help():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, 2000)
    logits = 2.0 * np.eye(3)[codes] + rng.normal(size=(2000, 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    # draw the labels from the logits' own softmax: T = 1 is right, by construction
    codes = np.array([rng.choice(3, p=row) for row in p])
    t, rep = fit_temperature(logits, codes)
    assert abs(t - 1) < 0.1 and rep["log_loss_after"] <= rep["log_loss_before"]
    # negative control: the same logits twice as large need T near 2
    t2, rep2 = fit_temperature(2 * logits, codes)
    assert abs(t2 - 2) < 0.2 and rep2["fitted_temperature"] == t2


def test_first_covering_takes_one_repeat():
    from sklearn.model_selection import RepeatedStratifiedKFold

    y = np.repeat([0, 1], 6)
    splits = first_covering(RepeatedStratifiedKFold(n_splits=3, n_repeats=4, random_state=0).split(y, y))
    assert len(splits) == 3
    assert np.array_equal(np.sort(np.concatenate([t for _, t in splits])), np.arange(12))


def test_ece_is_zero_for_calibrated_bins_and_not_otherwise():
    conf = np.repeat([0.55, 0.95], 20)
    right = np.r_[np.arange(20) < 11, np.arange(20) < 19]
    assert expected_calibration_error(conf, right) == pytest.approx(0.0)
    assert expected_calibration_error(conf, ~right) == pytest.approx(0.5)


def test_error_free_scores_do_not_give_certainty():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, 200)
    logits = 4.0 * np.eye(3)[codes] + rng.normal(size=(200, 3))  # every argmax right
    assert (logits.argmax(1) == codes).all()
    t, rep = fit_temperature(logits, codes)
    p = np.exp(logits / t) / np.exp(logits / t).sum(1, keepdims=True)
    assert t < 1 and rep["log_loss_after"] < rep["log_loss_before"]  # sharper, as it should
    assert p.max(1).min() < 0.999 and 1 - p.max(1).mean() > 1e-4  # but not certain
