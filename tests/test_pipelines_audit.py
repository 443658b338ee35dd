"""The data audit: exact and near duplicates, conflicting labels, leakage across the split."""

from __future__ import annotations

import numpy as np
import pytest

from deepfeat.pipelines.audit import audit_dataset, near_duplicate_pairs


def _basis(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` random unit vectors: pairwise cosines far below 0.95."""
    v = np.random.default_rng(seed).normal(size=(n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_near_duplicates_respect_the_threshold():
    e = _basis(6)
    e[5] = e[0] + 0.05 * e[1]  # cosine ~0.999 with row 0
    i, j, s = near_duplicate_pairs(e, 0.95, chunk=2)  # small chunks exercise the loop
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 5)]
    assert s[0] > 0.99
    assert near_duplicate_pairs(e, 0.9999)[0].size == 0


def test_nan_rows_never_match():
    e = _basis(3)
    e[2] = np.nan
    assert near_duplicate_pairs(np.vstack([e, e[:1]]), 0.95)[0].tolist() == [0]


def test_audit_classifies_pairs():
    e = _basis(8)
    labels = ["a", "a", "a", "b", "b", "b", "a", "b"]
    split = ["train", "train", "test", "train", "test", "test", "test", "train"]
    keys = [f"k{i}" for i in range(8)]
    keys[6] = keys[0]  # exact duplicate across the split, same class: a leak
    e[6] = e[0]
    keys[7] = keys[1]  # exact duplicate with another label: conflicting labels
    e[7] = e[1]
    e[4] = e[3] + 0.02 * e[5]  # near duplicate across the split, same class: a leak
    e[2] = e[1] * 0.5  # same direction inside class a, train vs test: near leak
    a = audit_dataset([f"{i}.png" for i in range(8)], labels, keys, e, split=split)
    c = a.counts()
    assert c["exact_leaks"] == 1 and c["exact_conflicting_labels"] == 1
    assert c["near_leaks"] >= 2
    assert a.leaked_test().tolist() == [2, 4, 6]
    # The leaks are listed first, so thumbnails show the worst problems first.
    assert a.pairs.leak.iloc[0]
    text = " ".join(a.warnings())
    assert "Leakage" in text and "Conflicting labels" in text


def test_clean_data_raises_no_warning():
    e = _basis(6)
    a = audit_dataset(
        [f"{i}" for i in range(6)], list("aabbcc"), list("uvwxyz"), e, split=["train", "test"] * 3
    )
    assert a.pairs.empty and a.warnings() == [] and a.leaked_test().size == 0


def test_without_a_split_nothing_is_a_leak_and_redundant_keeps_one_per_group():
    e = _basis(5)
    e[3] = e[0]
    e[4] = e[0] * 2.0
    a = audit_dataset(list("abcde"), list("xxxxx"), list("12345"), e)
    assert not a.pairs.leak.any() and a.counts()["near_within_class"] == 3
    assert a.redundant().tolist() == [3, 4]


def test_failures_and_imbalance_are_reported():
    e = _basis(7)
    e[6] = np.nan
    a = audit_dataset(
        list("abcdefg"),
        ["a"] * 5 + ["b"] * 2,
        list("1234567"),
        e,
        failures=[{"index": 6, "path": "g", "reason": "empty file (0 bytes)"}],
        skipped=[{"path": "Thumbs.db", "reason": "not an image file"}],
    )
    c = a.counts()
    assert c["failed_decodes"] == 1 and c["skipped_files"] == 1
    assert a.class_counts.loc["b"].sum() == 1  # the failed image is not counted
    assert any("imbalance" in w for w in a.warnings())


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError, match="threshold"):
        audit_dataset(["a"], ["x"], ["k"], np.ones((1, 2)), threshold=1.5)


def test_pixel_check_separates_lookalikes_from_copies():
    """Out of the backbone's domain, embeddings of different images can coincide."""
    e = np.ones((4, 8))  # the CNN sees four identical images
    rng = np.random.default_rng(0)
    base = rng.random((3, 64))
    thumbs = np.vstack([base[0], base[0] * 0.9 + 0.05, base[1], base[2]])  # 0~1 are copies
    calls = []

    def thumbnails(idx):
        calls.append(list(idx))
        return thumbs[idx]

    a = audit_dataset(list("abcd"), list("xxyy"), list("1234"), e, thumbnails=thumbnails)
    assert a.pairs[["i", "j"]].values.tolist() == [[0, 1]]
    assert a.pairs.pixel_correlation.iloc[0] > 0.99
    assert a.similar_only == 5 and a.counts()["near_conflicting_labels"] == 0
    assert calls == [[0, 1, 2, 3]]  # decoded once, candidates only
    # Without the pixel check every pair counts, including four "conflicting labels".
    assert (
        audit_dataset(list("abcd"), list("xxyy"), list("1234"), e).counts()[
            "near_conflicting_labels"
        ]
        == 4
    )
