"""The scikit-learn estimator contract on TEXT input (TextEmbedder, a Pipeline, TransferClassifier).

sklearn's ``parametrize_with_checks`` feeds rows of numbers, which a text estimator
refuses (as the image estimators do; the same exemptions apply, see
tests/test_classify_images.py); the properties those checks test with a fit are checked
here on real sentences instead.
"""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks
from test_classify_images import _EMBEDDER_EXEMPT
from text_data import RUNTIME, split, text_cache

from deepfeat.classify import EmbeddingClassifier, TransferClassifier
from deepfeat.classify.text_embedder import TextEmbedder

pytest.importorskip("transformers")

SEARCH = {"heads": "logreg", "preprocessing": "standardize", "param_grid": {"logreg": {"C": [0.1, 10.0]}},
          "cv": 2}
METHODS = ("predict", "predict_proba", "decision_function", "transform")
KINDS = ("embedder", "tfidf", "pipeline", "transfer")

_TEXT_EXEMPT = {k: v.replace("images", "texts") for k, v in _EMBEDDER_EXEMPT.items()}
_TEXT_EXEMPT["check_fit2d_1sample"] = "expects a '1 sample' message; a single text is a valid input to embed"


@parametrize_with_checks([TextEmbedder(device="cpu")], expected_failed_checks=lambda e: _TEXT_EXEMPT,
                         xfail_strict=True)
def test_sklearn_checks_that_apply_to_text_input(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def texts() -> dict[str, np.ndarray]:
    d = split()
    return {"X": d["X"][:30], "y": d["y"][:30], "X_test": d["X_test"][:12]}


@pytest.fixture(params=KINDS)
def make(request, tmp_path_factory):
    cache = text_cache(tmp_path_factory)
    runtime = {**RUNTIME, "cache": cache}

    def build():
        if request.param == "embedder":
            return TextEmbedder(**runtime)
        if request.param == "tfidf":
            return TextEmbedder("tfidf")
        if request.param == "pipeline":
            return Pipeline([("embed", TextEmbedder(**runtime)), ("head", EmbeddingClassifier(**SEARCH))])
        # calibration and the honest estimate are contract-neutral and checked on images
        return TransferClassifier(TextEmbedder("minilm", **runtime),
                                  EmbeddingClassifier(**SEARCH, calibrate=False, honest=False),
                                  spaces=[[{}, {"backbone": "tfidf"}]])

    return build


def _params(est) -> str:
    """Hash of the parameter values (deep), leaving out the nested estimator objects."""
    params = est.get_params(deep=True)
    if isinstance(est, Pipeline):
        params = {k: v for k, v in params.items() if k != "steps" and k not in dict(est.steps)}
    return joblib.hash(params)


def _outputs(est, X) -> dict[str, np.ndarray]:
    return {m: np.asarray(getattr(est, m)(X)) for m in METHODS if hasattr(est, m)}


def _same(a, b) -> None:
    assert a.keys() == b.keys() and a
    for m in a:
        if a[m].dtype.kind in "fc":
            np.testing.assert_allclose(a[m], b[m], rtol=1e-5, atol=1e-7, err_msg=m)
        else:
            np.testing.assert_array_equal(a[m], b[m], err_msg=m)


def test_fit_returns_self_and_keeps_parameters(make, texts):
    est = make()
    before = _params(est)
    assert est.fit(texts["X"], texts["y"]) is est
    assert _params(est) == before


def test_refit_is_idempotent_and_predicting_changes_nothing(make, texts):
    est = make().fit(texts["X"], texts["y"])
    first = _outputs(est, texts["X_test"])
    state = joblib.hash(est)
    _outputs(est, texts["X_test"])
    assert joblib.hash(est) == state
    est.fit(texts["X_test"][:8], texts["y"][:8]).fit(texts["X"], texts["y"])
    _same(first, _outputs(est, texts["X_test"]))


def test_order_and_subset_invariance(make, texts):
    est = make().fit(texts["X"], texts["y"])
    X = texts["X_test"]
    whole = _outputs(est, X)
    perm = np.random.default_rng(0).permutation(len(X))
    _same({m: v[perm] for m, v in whole.items()}, _outputs(est, X[perm]))
    for part in np.array_split(np.arange(len(X)), 4):
        _same({m: v[part] for m, v in whole.items()}, _outputs(est, X[part]))


def test_clone_and_pickle(make, texts):
    est = make().fit(texts["X"], texts["y"])
    twin = clone(est)
    parts = [s for _, s in twin.steps] if isinstance(twin, Pipeline) else [twin]
    assert not [k for p in parts for k in vars(p) if k.endswith("_") and not k.startswith("_")]
    _same(_outputs(est, texts["X_test"]), _outputs(twin.fit(texts["X"], texts["y"]), texts["X_test"]))
    back = pickle.loads(pickle.dumps(est))
    a, b = _outputs(est, texts["X_test"]), _outputs(back, texts["X_test"])
    for m in a:
        np.testing.assert_array_equal(a[m], b[m], err_msg=m)
