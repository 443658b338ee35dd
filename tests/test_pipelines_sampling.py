"""The k-shot sampler and the stratified split: exact counts, fixed seeds, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from deepfeat.exceptions import InputError
from deepfeat.pipelines.sampling import parse_shots, sample_k_shot, stratified_split


@pytest.fixture(scope="module")
def y() -> np.ndarray:
    return load_digits().target


@pytest.mark.parametrize("k", [1, 2, 5, 17])
def test_exactly_k_per_class(y, k):
    idx = sample_k_shot(y, k, seed=3)
    classes, counts = np.unique(y[idx], return_counts=True)
    assert classes.tolist() == list(range(10))
    assert counts.tolist() == [k] * 10
    assert len(np.unique(idx)) == len(idx)


def test_same_seed_same_draw_other_seed_other_draw(y):
    a = sample_k_shot(y, 5, seed=0)
    assert np.array_equal(a, sample_k_shot(y, 5, seed=0))
    assert not np.array_equal(a, sample_k_shot(y, 5, seed=1))


def test_draws_are_nested_within_a_seed(y):
    small, large = sample_k_shot(y, 2, seed=7), sample_k_shot(y, 10, seed=7)
    assert set(small) <= set(large)


def test_draws_stay_inside_the_pool(y):
    pool = np.arange(0, len(y), 2)
    idx = sample_k_shot(y, 4, seed=0, pool=pool)
    assert set(idx) <= set(pool)
    assert np.array_equal(sample_k_shot(y, "all", seed=0, pool=pool), pool)


def test_too_few_images_names_the_class():
    y = np.array(["cat"] * 5 + ["dog"] * 2)
    with pytest.raises(InputError, match=r"class 'dog' has only 2 image\(s\).*k=3"):
        sample_k_shot(y, 3, seed=0)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "two"])
def test_bad_k_is_refused(bad):
    with pytest.raises(ValueError):
        sample_k_shot(np.array([0, 1]), bad, seed=0)


def test_parse_shots():
    assert parse_shots("20, 1,all,5,1") == [1, 5, 20, "all"]
    assert parse_shots([3, "ALL"]) == [3, "all"]
    for bad in ("0", "1,x", "1.5", ""):
        with pytest.raises(ValueError, match="shots"):
            parse_shots(bad)


def test_stratified_split_counts_and_determinism(y):
    tr, te = stratified_split(y, 40, seed=0)
    assert np.intersect1d(tr, te).size == 0
    assert len(tr) + len(te) == len(y)
    assert np.unique(y[te], return_counts=True)[1].tolist() == [40] * 10
    tr2, te2 = stratified_split(y, 40, seed=0)
    assert np.array_equal(te, te2) and np.array_equal(tr, tr2)
    assert not np.array_equal(te, stratified_split(y, 40, seed=1)[1])


def test_stratified_split_fraction_and_errors():
    y = np.array([0] * 10 + [1] * 4)
    _, te = stratified_split(y, 0.5, seed=0)
    assert np.unique(y[te], return_counts=True)[1].tolist() == [5, 2]
    with pytest.raises(InputError, match="class 1 has 4"):
        stratified_split(y, 4, seed=0)
    with pytest.raises(ValueError, match="test_size"):
        stratified_split(y, 1.5, seed=0)
