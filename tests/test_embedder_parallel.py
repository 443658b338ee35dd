"""ImageEmbedder in a parallel search: worker processes share one temporary cache."""

from __future__ import annotations

import os
import pickle

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline

from deepfeat.classify import ImageEmbedder
from deepfeat.classify.embedder import process_cache_path
from deepfeat.featurize import FeatureCache

# A feature space no other test uses, so counts in long-lived loky workers start at zero.
SPACE = {"backbone": "efficientnet_lite0", "weights": None, "layer": "blocks.2", "pool": "max"}


def _images(n: int = 24) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(1612)
    dark = [rng.integers(0, 90, (40, 40, 3), dtype=np.uint8) for _ in range(n // 2)]
    light = [rng.integers(160, 255, (40, 40, 3), dtype=np.uint8) for _ in range(n // 2)]
    return dark + light, np.array([0] * (n // 2) + [1] * (n // 2))


def pid_and_passes(estimator, X, y) -> float:
    """A 'score' that reports which process scored and how many images it has embedded."""
    return os.getpid() * 1e6 + estimator[0].featurizer_.forward_passes


def test_parallel_grid_search_featurizes_every_image_once():
    X, y = _images()
    emb = ImageEmbedder(**SPACE, device="cpu", precision="fp32", lock_timeout=120)
    search = GridSearchCV(
        make_pipeline(emb, LogisticRegression(max_iter=500)), {"logisticregression__C": [0.1, 1.0]},
        cv=StratifiedKFold(3, shuffle=True, random_state=0), n_jobs=2, refit=False,
        scoring={"accuracy": "accuracy", "passes": pid_and_passes}, error_score="raise",
    )
    search.fit(X, y)
    res = search.cv_results_
    scores = np.array([res[f"split{i}_test_accuracy"] for i in range(3)])
    assert np.isfinite(scores).all() and scores.mean() > 0.9  # no score lost, and learnt
    per_process: dict[int, int] = {}
    for i in range(3):
        for v in res[f"split{i}_test_passes"]:
            pid, passes = divmod(int(round(v)), 10**6)
            per_process[pid] = max(per_process.get(pid, 0), passes)
    assert os.getpid() not in per_process  # the work ran in worker processes
    # Each worker on its own cache would embed nearly every image (sum ~ 2 x 24).
    assert sum(per_process.values()) == len(X), per_process
    cache = FeatureCache(process_cache_path())
    assert sorted(s["rows"] for s in cache.spaces().values() if s["layer"] == "blocks.2") == [len(X)]


def test_the_carried_cache_is_dropped_when_it_no_longer_exists(tmp_path):
    emb = ImageEmbedder(**SPACE)
    state = emb.__getstate__()
    assert state["_carried_cache"] == process_cache_path()
    gone = pickle.loads(pickle.dumps(emb))
    gone._carried_cache = str(tmp_path / "gone" / "features.h5")  # e.g. a model saved long ago
    assert gone._runtime_params()["cache"] is None  # falls back to this process's own cache
    named = ImageEmbedder(**SPACE, cache=tmp_path / "c.h5")
    assert "_carried_cache" not in named.__getstate__()


def test_runtime_settings_reach_the_featurizer(tmp_path):
    X, _ = _images(4)
    emb = ImageEmbedder(**SPACE, cache=tmp_path / "c.h5", device="cpu", precision="fp32",
                        jit=False, storage_dtype="float16", lock_timeout=5.0, tta="flip").fit(X)
    f = emb.featurizer_
    assert (f.jit, f.storage_dtype, f.lock_timeout, f.tta) == (False, "float16", 5.0, "flip")
    emb.transform(X)
    assert [s["dtype"] for s in FeatureCache(tmp_path / "c.h5").spaces().values()] == ["float16"]


def test_transfer_classifier_routes_every_embedder_setting():
    """Composed, not copied: every ImageEmbedder parameter is reachable as ``embedder__<name>``
    (none is re-declared by the wrapper) and reaches the space fit embeds."""
    import inspect

    from deepfeat.classify import TransferClassifier

    embedder = set(inspect.signature(ImageEmbedder).parameters)
    assert not embedder & set(TransferClassifier().get_params(deep=False))  # no copies
    clf = TransferClassifier(ImageEmbedder(), spaces=None).set_params(
        embedder__tta="flip", embedder__jit=False, embedder__storage_dtype="float16", embedder__lock_timeout=5.0)
    assert {f"embedder__{k}" for k in embedder} <= set(clf.get_params(deep=True))
    assert clf._runtime_params() == {"cache": None, "device": "auto", "precision": "auto", "jit": False,
                                     "batch_size": 32, "num_workers": "auto", "storage_dtype": "float16",
                                     "lock_timeout": 5.0, "progress": False}
    assert clf.candidate_spaces() == [[{"backbone": ImageEmbedder().backbone, "layer": None, "pool": "avg",
                                        "weights": "DEFAULT", "checkpoint": None, "tta": "flip"}]]
