"""Selectors of deepfeat.label on embedding matrices (sklearn digits as a small real pool)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.neighbors import NearestCentroid

from deepfeat.exceptions import InputError, InvalidParameterError
from deepfeat.label import FirstSelector, NextSelector, RandomSelector
from deepfeat.pipelines.heads import fixed_head

# NearestCentroid warns when a class has one training row (a zero spread): expected here
pytestmark = pytest.mark.filterwarnings("ignore:self.within_class_std_dev_:UserWarning")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32), y


def _accuracy(X, y, idx) -> float:
    """Accuracy on the whole pool of a nearest-centroid classifier trained on the picks
    (cheap and deterministic: what is measured is the picks, not the head)."""
    if len(np.unique(y[idx])) < 2:
        return float(np.mean(y == y[idx][0]))
    return float(np.mean(NearestCentroid().fit(X[idx], y[idx]).predict(X) == y))


@pytest.mark.parametrize("make", [lambda: FirstSelector(), lambda: NextSelector()])
def test_exact_duplicates_are_never_both_picked(digits, make):
    X, y = digits
    base = np.arange(0, 600, 3)  # 200 distinct rows, each present three times
    pool = np.r_[X[base], X[base], X[base]]
    sel = make()
    if isinstance(sel, NextSelector):
        lab = np.arange(1, 600, 30)
        sel.fit(pool, X_labeled=X[lab], y_labeled=y[lab])
    else:
        sel.fit(pool)
    picks = sel.select(150)
    rows = {pool[i].tobytes() for i in picks.indices}
    assert len(picks) == 150 and len(rows) == 150


def test_asking_for_more_than_the_distinct_items_returns_only_distinct_ones(digits):
    X, _ = digits
    pool = np.r_[X[:20], X[:20]]
    picks = FirstSelector().fit(pool).select(30)
    assert len({pool[i].tobytes() for i in picks.indices}) == len(picks) == 20


def test_first_picks_beat_random_and_shuffled_embeddings_do_not(digits):
    """Positive control (the real embeddings) and negative control (rows permuted relative
    to the items): the shuffled selector is no better than random picks, draw by draw."""
    X, y = digits
    n = 20
    first = _accuracy(X, y, FirstSelector().fit(X).select(n).indices)
    rand, shuffled = [], []
    for seed in range(10):
        rand.append(_accuracy(X, y, RandomSelector(random_state=seed).fit(X).select(n).indices))
        perm = np.random.default_rng(100 + seed).permutation(len(X))
        # the selector sees row i as the embedding of item perm[i]; it picks rows, and
        # the item labelled is the one at that row
        picked = FirstSelector(random_state=seed).fit(X[perm]).select(n).indices
        shuffled.append(_accuracy(X, y, picked))
    rand, shuffled = np.array(rand), np.array(shuffled)
    diff = shuffled - rand
    noise = 2 * diff.std(ddof=1) / np.sqrt(len(diff))
    assert diff.mean() <= noise + 0.01, (shuffled.mean(), rand.mean())
    assert first > rand.mean() + 0.05, (first, rand.mean())


def test_next_picks_are_uncertain_and_check_finds_flipped_labels(digits):
    X, y = digits
    lab = np.arange(0, 1797, 12)  # 150 labelled
    pool = np.setdiff1d(np.arange(len(X)), lab)
    y_lab = y[lab].copy()
    flipped = [5, 40, 90]
    y_lab[flipped] = (y_lab[flipped] + 1) % 10
    sel = NextSelector().fit(X[pool], X_labeled=X[lab], y_labeled=y_lab)
    picks = sel.select(30)
    assert np.median(sel.margin_[picks.indices]) < np.quantile(sel.margin_, 0.25)
    assert all("uncertain between" in r for r in picks.reasons)
    check = sel.check()
    assert check.kind == "check" and set(flipped) <= set(check.indices[:10].tolist())


def test_next_with_a_model_probabilities(digits):
    X, y = digits
    P = fixed_head().fit(X[:100], y[:100]).predict_proba(X[100:])
    sel = NextSelector().fit(X[100:], proba=P, classes=np.arange(10))
    assert len(sel.select(10)) == 10 and sel.check().indices.size == 0


def test_parameters_are_checked_and_cloned(digits):
    X, _ = digits
    with pytest.raises(InvalidParameterError, match="n=5000 is more than the 1797"):
        FirstSelector().fit(X).select(5000)
    with pytest.raises(InvalidParameterError, match="n must be an integer >= 1"):
        FirstSelector().fit(X).select(0)
    with pytest.raises(InvalidParameterError, match="n_neighbors"):
        FirstSelector(n_neighbors=0).fit(X)
    with pytest.raises(InputError, match="NaN"):
        FirstSelector().fit(np.r_[X[:5], np.full((1, 64), np.nan)])
    with pytest.raises(InputError, match="labelled items"):
        NextSelector().fit(X)
    sel = NextSelector(candidates=3, random_state=7)
    assert clone(sel).get_params() == sel.get_params()


@pytest.mark.slow
def test_simulated_rounds_pair_strategies_draw_by_draw(digits):
    from deepfeat.label.simulate import labels_saved, paired_difference, simulate_acquisition

    X, y = digits
    t = simulate_acquisition(X[:900], y[:900], X[900:], y[900:], shots=(1, 2), draws=2)
    assert len(t) == 2 * 2 * 3 * 2 and set(t.strategy) == {"random", "first", "next"}
    assert (t[t.strategy == "random"].labels == t[t.strategy == "first"].labels.to_numpy()).all()
    d = paired_difference(t, {"strategy": "first", "unlabeled": False}, {"strategy": "random", "unlabeled": False})
    assert d.draws.tolist() == [2, 2]
    assert len(labels_saved(t, "first")) == 2
