"""What the README promises about threads: a fitted model and one FeatureCache may be shared.

Several threads drive them at once on real images; every answer must equal the one a
single thread gets. Run 20 times in a row for the issue that added it (issue 25):
``for i in $(seq 20); do pytest tests/test_thread_safety.py -q || break; done``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import make_variants

N_THREADS = 4


@pytest.fixture(scope="module")
def fitted(photo_dir, tmp_path_factory):
    from deepfeat.classify import EmbeddingClassifier, ImageEmbedder, TransferClassifier

    d = tmp_path_factory.mktemp("threads")
    paths = [str(p) for p in make_variants(photo_dir, d / "img", 40)]
    labels = [i % 2 for i in range(len(paths))]  # the fit's accuracy is not under test
    clf = TransferClassifier(ImageEmbedder(device="cpu", cache=str(d / "c.h5")),
                             EmbeddingClassifier("logreg", cv=2, honest=False), spaces=None).fit(paths[:24], labels[:24])
    return clf, paths


def _rounds(fn, jobs):
    """Run every job on N_THREADS threads at once, each thread its own shuffled order."""
    with ThreadPoolExecutor(N_THREADS) as ex:
        return list(ex.map(fn, jobs))


def test_one_fitted_model_predicts_from_many_threads_as_from_one(fitted):
    clf, paths = fitted
    ref = clf.predict_proba(paths)  # single thread; the unseen images are now cached
    rng = np.random.default_rng(0)
    jobs = [rng.permutation(len(paths))[: 12 + i] for i in range(3 * N_THREADS)]
    got = _rounds(lambda idx: (idx, clf.predict_proba([paths[i] for i in idx])), jobs)
    for idx, proba in got:
        np.testing.assert_allclose(proba, ref[idx], rtol=1e-5, atol=1e-6)


def test_one_model_without_cache_computes_the_same_on_many_threads(fitted):
    """With no cache every thread runs the network itself (built once, shared)."""
    import copy

    clf, paths = fitted
    ref = clf.predict_proba(paths[:8])
    nocache = copy.deepcopy(clf).set_params(embedder__cache=None)  # runtime settings may change after fit
    got = _rounds(lambda i: nocache.predict_proba(paths[i : i + 8]), [0] * (2 * N_THREADS))
    for proba in got:
        np.testing.assert_allclose(proba, ref, rtol=1e-4, atol=1e-5)


def test_one_feature_cache_read_by_many_threads(fitted):
    from deepfeat.featurize import FeatureCache
    from deepfeat.featurize.hashing import hash_bytes

    clf, paths = fitted
    cache = FeatureCache(clf.embedder.cache)
    (space,) = [s for s in cache.spaces()]
    keys = [hash_bytes(Path(p).read_bytes()) for p in paths]
    ref, ok = cache.read(space, keys)
    assert ok.all()
    fresh = FeatureCache(clf.embedder.cache)  # its index is loaded by the threads themselves
    rng = np.random.default_rng(1)
    jobs = [rng.permutation(len(keys)) for _ in range(4 * N_THREADS)]

    def read(order):
        rows, found = fresh.read(space, [keys[i] for i in order])
        return order, rows, found

    for order, rows, found in _rounds(read, jobs):
        assert found.all()
        np.testing.assert_array_equal(rows, ref[order])
