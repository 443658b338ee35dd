"""The evaluation protocol: held-out images never reach training or tuning; seeds fix the tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from deepfeat.exceptions import InputError
from deepfeat.pipelines.protocol import make_draws, run_protocol
from deepfeat.pipelines.sampling import stratified_split
from deepfeat.pipelines.summary import paired_gain, summarize

#: Row ids seen by every ``fit`` call (the outer refit and every inner CV fit).
FIT_LOG: list[set[int]] = []
PREDICT_LOG: list[set[int]] = []


class RecordingClassifier(ClassifierMixin, BaseEstimator):
    """A logistic regression that records which rows (id in the last column) it sees."""

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self, X, y):
        FIT_LOG.append(set(X[:, -1].astype(int).tolist()))
        self.model_ = LogisticRegression(C=self.C, max_iter=3000).fit(X[:, :-1], y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        PREDICT_LOG.append(set(X[:, -1].astype(int).tolist()))
        return self.model_.predict(X[:, :-1])

    def predict_proba(self, X):
        return self.model_.predict_proba(X[:, :-1])


def recording_search(y_train, seed):
    n = max(2, min(3, np.unique(y_train, return_counts=True)[1].min()))
    return GridSearchCV(
        RecordingClassifier(),
        {"C": [0.1, 1.0]},
        cv=StratifiedKFold(n, shuffle=True, random_state=seed),
    )


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    keep = np.flatnonzero(y < 5)[:300]  # 5 classes keep the test fast
    X, y = X[keep] / 16.0, y[keep]
    return np.hstack([X, np.arange(len(y))[:, None]]), y  # last column: row id


def _check_no_leak(fit_log, draws_by_fit):
    for seen, draw in zip(fit_log, draws_by_fit, strict=True):
        assert seen <= set(draw.train.tolist()), "a fit saw rows outside its training draw"
        assert not seen & set(draw.test.tolist()), "a fit saw held-out rows"


@pytest.mark.parametrize("fixed_test", [True, False], ids=["fixed-test", "rest-held-out"])
def test_heldout_rows_never_reach_training_or_tuning(digits, fixed_test):
    X, y = digits
    tr, te = stratified_split(y, 20, seed=0) if fixed_test else (None, None)
    draws, _ = make_draws(y, [2, 5, 10], repeats=2, train_pool=tr, test=te)
    FIT_LOG.clear()
    PREDICT_LOG.clear()
    seen_per_draw = []
    for draw in draws:
        before = len(FIT_LOG)
        run_protocol({"x": X}, y, [draw], search_factory=recording_search)
        seen_per_draw.append((FIT_LOG[before:], draw))
    for fits, draw in seen_per_draw:
        assert len(fits) >= 3  # the inner CV fits and the refit were all recorded
        for seen in fits:
            _check_no_leak([seen], [draw])
        # The refit on the whole training draw sees exactly the draw.
        assert fits[-1] == set(draw.train.tolist())
    # Held-out rows do reach predict (they are scored), and only through predict.
    assert any(set(d.test.tolist()) <= p for d in draws for p in PREDICT_LOG)


def test_leak_check_catches_a_leaky_fit(digits):
    """Negative control: the check above fails when a fit does see held-out rows."""
    X, y = digits
    draws, _ = make_draws(y, [2], repeats=1)
    leaky = set(draws[0].train.tolist()) | {int(draws[0].test[0])}
    with pytest.raises(AssertionError, match="held-out|outside"):
        _check_no_leak([leaky], draws)


def test_train_and_test_are_disjoint_and_balanced(digits):
    _, y = digits
    tr, te = stratified_split(y, 20, seed=0)
    draws, _ = make_draws(y, [1, 3, "all"], repeats=3, train_pool=tr, test=te)
    for d in draws:
        assert np.intersect1d(d.train, d.test).size == 0
        assert np.array_equal(d.test, te)
    assert [d.shots for d in draws].count("all") == 1  # "all" is one draw, not three copies


def test_k1_uses_the_documented_fixed_head(digits):
    X, y = digits
    calls = []

    def factory(y_train, seed):
        calls.append(len(y_train))
        return recording_search(y_train, seed)

    draws, _ = make_draws(y, [1, 2], repeats=1)
    res = run_protocol({"x": X}, y, draws, search_factory=factory)
    assert calls == [10]  # only k=2 (5 classes x 2) is tuned
    tuning = dict(zip(res.table.shots, res.table.tuning, strict=True))
    assert tuning["1"].startswith("fixed") and tuning["2"].startswith("nested")


def test_fixed_seeds_give_identical_tables(digits):
    X, y = digits
    spaces = {"a": X, "b": np.hstack([np.sqrt(X[:, :-1]), X[:, -1:]])}
    tables = []
    for _ in range(2):
        draws, _ = make_draws(y, [1, 4], repeats=2, seed=11)
        res = run_protocol(spaces, y, draws, search_factory=recording_search)
        tables.append(res.table.drop(columns="fit_seconds"))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    draws, _ = make_draws(y, [1, 4], repeats=2, seed=12)
    other = run_protocol(spaces, y, draws, search_factory=recording_search)
    assert not other.table.accuracy.equals(tables[0].accuracy)


def test_spaces_share_draws_and_pixels_beat_noise(digits):
    X, y = digits
    rng = np.random.default_rng(0)
    noise = np.hstack([rng.normal(size=(len(y), 64)), X[:, -1:]])
    draws, _ = make_draws(y, [2, 8], repeats=3)
    res = run_protocol({"pixels": X, "noise": noise}, y, draws, search_factory=recording_search)
    t = res.table
    a, b = t[t.space == "pixels"], t[t.space == "noise"]
    assert (
        a[["shots", "repeat", "n_train", "n_test"]].values.tolist()
        == b[["shots", "repeat", "n_train", "n_test"]].values.tolist()
    )
    gain = paired_gain(t, "pixels", "noise")
    assert (gain.ci_low > 0).all()  # pixels carry the signal, noise does not
    s = summarize(t)
    noise_acc = s[s.space == "noise"]["mean"]
    assert (noise_acc < 0.45).all()  # chance is 0.2 with 5 classes
    assert ((s.ci_low <= s["mean"]) & (s["mean"] <= s.ci_high)).all()
    assert s.ci_high.max() <= 1.0


def test_infeasible_shots_are_skipped_with_a_note():
    y = np.array([0] * 6 + [1] * 3)
    draws, notes = make_draws(y, [1, 2, 3, "all"], repeats=1)
    assert sorted({d.shots for d in draws}) == [1, 2]
    assert any("shots=3" in n for n in notes) and any("'all'" in n for n in notes)
    with pytest.raises(InputError, match="no shot value"):
        make_draws(y, [5], repeats=1)


def test_overlapping_pool_and_test_is_refused():
    y = np.array([0, 0, 1, 1])
    with pytest.raises(InputError, match="overlap"):
        make_draws(y, [1], repeats=1, train_pool=np.array([0, 1, 2]), test=np.array([2, 3]))
