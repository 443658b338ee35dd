"""Saving and loading models: same predictions in a fresh process, trust, missing backbones."""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.model_selection import KFold
from test_classify_images import per_class_split, shared_cache_path, write_lfw

from deepfeat.classify import (
    EmbeddingClassifier,
    ImageEmbedder,
    TransferClassifier,
    load,
    load_xy,
    save,
)
from deepfeat.classify.persistence import trust_store_path
from deepfeat.exceptions import InputError, UnknownBackboneError, WeightsUnavailableError


@pytest.fixture(autouse=True)
def _private_trust_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store = tmp_path / "trusted-models.txt"
    monkeypatch.setenv("DEEPFEAT_TRUST_STORE", str(store))
    return store


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[TransferClassifier, list[str]]:
    """An RBF-SVM head (temperature-scaled probabilities) on 24 lfw images; 16 to predict."""
    X, y = load_xy(write_lfw(tmp_path_factory.mktemp("lfw")))
    X = np.array(X)
    tr, te = per_class_split(y, 12, seed=0, pool=20)
    cache = shared_cache_path(tmp_path_factory)
    clf = TransferClassifier(ImageEmbedder(cache=cache, device="cpu"), EmbeddingClassifier("rbfsvm"),
                             spaces=None).fit(list(X[tr]), y[tr])
    return clf, list(X[te])


def test_fresh_process_predicts_identically(fitted, tmp_path):
    clf, paths = fitted
    model = save(clf, tmp_path / "model.joblib")
    expected = clf.predict_proba(paths)
    (tmp_path / "paths.json").write_text(json.dumps(paths))
    code = (
        "import json, sys, numpy as np\n"
        "from deepfeat.classify import load\n"
        "m = load(sys.argv[1])\n"
        "np.save(sys.argv[3], m.predict_proba(json.load(open(sys.argv[2]))))\n"
    )
    out = tmp_path / "proba.npy"
    subprocess.run(
        [sys.executable, "-c", code, model, str(tmp_path / "paths.json"), str(out)],
        check=True,
        env=dict(os.environ),
        timeout=300,
    )
    np.testing.assert_array_equal(np.load(out), expected)
    assert clf.best_params_["head"] == "rbfsvm" and np.isfinite(expected).all()


def test_saved_model_holds_the_backbone_spec_not_the_network(fitted, tmp_path):
    clf, paths = fitted
    blob = pickle.dumps(clf)
    names = {a for op, a, _ in pickletools.genops(blob) if isinstance(a, str)}
    assert not any(n.startswith("torch") for n in names)
    envelope = joblib.load(save(clf, tmp_path / "m.joblib"))
    assert envelope["featurizer_specs"] == [clf.featurizer_spec_]
    assert envelope["featurizer_specs"][0]["backbone"] == "efficientnet_lite0"
    assert os.path.getsize(tmp_path / "m.joblib") < 2_000_000  # the network alone is ~13 MB


def test_skops_roundtrip_and_allow_list(fitted, tmp_path):
    clf, paths = fitted
    m = load(save(clf, tmp_path / "model.skops"))
    np.testing.assert_array_equal(m.predict_proba(paths), clf.predict_proba(paths))
    # a type outside the allow-list is refused by name, and loads when named
    X = np.r_[np.zeros((6, 2)), np.ones((6, 2))] + np.arange(12)[:, None] * 0.01
    odd = EmbeddingClassifier("logreg", cv=KFold(3, shuffle=True, random_state=0)).fit(
        X, [0] * 6 + [1] * 6
    )
    path = save(odd, tmp_path / "odd.skops")
    with pytest.raises(InputError, match="KFold"):
        load(path)
    assert load(path, trusted=["sklearn.model_selection._split.KFold"]).predict(
        [[1, 1]]
    ).tolist() == [1]


def test_pickles_not_saved_here_need_an_explicit_trust(fitted, tmp_path, _private_trust_store):
    clf, paths = fitted
    ours = save(clf, tmp_path / "ours.joblib")
    assert trust_store_path() == _private_trust_store and _private_trust_store.exists()
    load(ours)  # saved by this machine: trusted
    foreign = tmp_path / "foreign.joblib"  # e.g. downloaded: same content, not recorded
    joblib.dump(joblib.load(ours), foreign)
    with pytest.raises(InputError, match="arbitrary code.*trusted=True"):
        load(foreign)
    assert (
        load(foreign, trusted=True).predict(paths[:2]).tolist() == clf.predict(paths[:2]).tolist()
    )
    with open(ours, "ab") as fh:  # changed after saving
        fh.write(b"\0")
    with pytest.raises(InputError, match="arbitrary code"):
        load(ours)


def test_missing_backbone_fails_clearly_at_load(fitted, tmp_path):
    clf, _ = fitted
    spec = clf.embedder_.featurizer_spec_
    for change, error, match in [
        ({"backbone": "timm:no_such_net"}, UnknownBackboneError, "no_such_net"),
        ({"weights_id": "some-other-weights.pth"}, WeightsUnavailableError, "some-other-weights"),
    ]:
        clf.embedder_.featurizer_spec_ = {**spec, **change}
        try:
            path = save(clf, tmp_path / "m.joblib")
        finally:
            clf.embedder_.featurizer_spec_ = spec
        with pytest.raises(error, match=rf"m\.joblib.*not available here.*{match}"):
            load(path)


def test_not_a_model_file(tmp_path):
    p = tmp_path / "x.joblib"
    joblib.dump({"a": 1}, p)
    with pytest.raises(InputError, match="not a deepfeat model"):
        load(p, trusted=True)
    with pytest.raises(InputError, match="no such model file"):
        load(tmp_path / "missing.joblib")
    with pytest.raises(InputError, match=r"\.joblib, \.pkl or \.skops"):
        save(object(), tmp_path / "m.txt")
