"""The scikit-learn estimator contract, checked on IMAGE input.

sklearn's ``parametrize_with_checks`` (tests/test_classify_images.py) feeds rows of
numbers, which these estimators reject, so the checks that need a fit are exempt there.
This module runs the same properties with images (sklearn digits, upscaled PNG files)
for the three ways deepfeat is used on images:

* ``ImageEmbedder`` (a transformer),
* ``Pipeline([ImageEmbedder, EmbeddingClassifier])``,
* ``TransferClassifier``.

Checked, for each: ``fit`` returns ``self``; a refit (after fitting other data) gives the
same outputs; ``fit`` leaves the constructor parameters as given; ``predict``,
``predict_proba``, ``decision_function`` and ``transform`` leave the fitted state
unchanged; permuting the input rows permutes the outputs; outputs on a subset equal the
subset of outputs; ``clone`` gives an unfitted copy with the same parameters that refits
to the same outputs; a pickle round trip predicts identically.
"""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pytest
from conftest import shared_cache_path
from sklearn.base import clone, is_classifier
from sklearn.datasets import load_digits
from sklearn.pipeline import Pipeline

from deepfeat.classify import EmbeddingClassifier, ImageEmbedder, TransferClassifier

SEARCH = {
    "heads": "logreg",
    "preprocessing": "standardize",
    "param_grid": {"logreg": {"C": [0.01, 1.0, 100.0]}},
    "cv": 2,
}
METHODS = ("predict", "predict_proba", "decision_function", "transform")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Digits 0-2 as 64x64 PNG files: 8 per class to fit, 4 per class held out."""
    from PIL import Image

    d = load_digits()
    root = tmp_path_factory.mktemp("contract")
    paths, labels = [], []
    for k in range(3):
        for j in np.flatnonzero(d.target == k)[:12]:
            a = (d.images[j] * (255 / 16)).round().astype(np.uint8)
            p = root / f"{k}_{j:04d}.png"
            Image.fromarray(np.pad(a, 2)).resize((64, 64), Image.BILINEAR).save(p)
            paths.append(str(p))
            labels.append(f"digit{k}")
    paths, labels = np.array(paths), np.array(labels)
    fit = np.concatenate([np.arange(12 * k, 12 * k + 8) for k in range(3)])
    test = np.setdiff1d(np.arange(len(paths)), fit)
    return {"X": paths[fit], "y": labels[fit], "X_test": paths[test], "y_test": labels[test]}


def _make(kind: str, cache: str):
    runtime = {"device": "cpu", "cache": cache, "num_workers": 0, "batch_size": 16}
    if kind == "embedder":
        return ImageEmbedder(**runtime)
    if kind == "pipeline":
        return Pipeline([("embed", ImageEmbedder(**runtime)), ("head", EmbeddingClassifier(**SEARCH))])
    return TransferClassifier(ImageEmbedder(**runtime), EmbeddingClassifier(**SEARCH), spaces=None)  # one space: fast


KINDS = ("embedder", "pipeline", "transfer")


@pytest.fixture(params=KINDS)
def make(request, tmp_path_factory):
    cache = shared_cache_path(tmp_path_factory)
    return lambda: _make(request.param, cache)


def _params(est) -> str:
    """Hash of the parameter values (deep), leaving out the nested estimator objects."""
    params = est.get_params(deep=True)
    if isinstance(est, Pipeline):
        params = {k: v for k, v in params.items() if k != "steps" and k not in dict(est.steps)}
    return joblib.hash(params)


def _outputs(est, X) -> dict[str, np.ndarray]:
    return {m: np.asarray(getattr(est, m)(X)) for m in METHODS if hasattr(est, m)}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys() and a
    for m in a:
        if a[m].dtype.kind in "fc":
            np.testing.assert_allclose(a[m], b[m], rtol=1e-6, atol=1e-9, err_msg=m)
        else:
            np.testing.assert_array_equal(a[m], b[m], err_msg=m)


def test_fit_returns_self(make, images):
    est = make()
    assert est.fit(images["X"], images["y"]) is est


def test_refit_is_idempotent(make, images):
    est = make().fit(images["X"], images["y"])
    first = _outputs(est, images["X_test"])
    # Fit other data in between: nothing of it may survive the next fit.
    other = np.r_[images["X_test"], images["X"][:6]]
    est.fit(other, np.r_[images["y_test"], images["y"][:6]])
    est.fit(images["X"], images["y"])
    _same(first, _outputs(est, images["X_test"]))


def test_fit_does_not_overwrite_parameters(make, images):
    est = make()
    before = _params(est)
    est.fit(images["X"], images["y"])
    assert _params(est) == before


def test_predicting_leaves_the_fitted_state_unchanged(make, images):
    est = make().fit(images["X"], images["y"])
    before = joblib.hash(est)  # every attribute, nested estimators included
    assert _outputs(est, images["X_test"])
    assert joblib.hash(est) == before


def test_predicting_after_a_runtime_change_leaves_the_fitted_state_unchanged(
    images, tmp_path_factory
):
    est = _make("transfer", shared_cache_path(tmp_path_factory)).fit(images["X"], images["y"])
    est.set_params(embedder__batch_size=4)  # a runtime setting: same feature space
    before = joblib.hash(est)
    est.predict(images["X_test"])
    assert joblib.hash(est) == before


def test_sample_order_invariance(make, images):
    est = make().fit(images["X"], images["y"])
    X = images["X_test"]
    perm = np.random.default_rng(0).permutation(len(X))
    assert (perm != np.arange(len(X))).any()
    base, permuted = _outputs(est, X), _outputs(est, X[perm])
    _same({m: v[perm] for m, v in base.items()}, permuted)


def test_subset_invariance(make, images):
    est = make().fit(images["X"], images["y"])
    X = images["X_test"]
    whole = _outputs(est, X)
    for part in np.array_split(np.arange(len(X)), 4):  # batches of three, as sklearn's check
        _same({m: v[part] for m, v in whole.items()}, _outputs(est, X[part]))


def test_clone_is_unfitted_with_equal_parameters_and_refits_the_same(make, images):
    est = make().fit(images["X"], images["y"])
    twin = clone(est)
    assert _params(twin) == _params(est)
    parts = [s for _, s in twin.steps] if isinstance(twin, Pipeline) else [twin]
    fitted = [k for part in parts for k in vars(part) if k.endswith("_") and not k.startswith("_")]
    assert not fitted, fitted
    twin.fit(images["X"], images["y"])
    _same(_outputs(est, images["X_test"]), _outputs(twin, images["X_test"]))


def test_pickle_round_trip_predicts_identically(make, images):
    est = make().fit(images["X"], images["y"])
    back = pickle.loads(pickle.dumps(est))
    a, b = _outputs(est, images["X_test"]), _outputs(back, images["X_test"])
    assert a.keys() == b.keys()
    for m in a:
        np.testing.assert_array_equal(a[m], b[m], err_msg=m)  # exactly, not approximately


def test_the_classifiers_learn_the_digits(make, images):
    """These checks compare outputs, so the outputs must mean something: a classifier must
    beat chance on held-out digits, and lose to it when trained on shuffled labels."""
    est = make()
    if not is_classifier(est):
        pytest.skip("a transformer: no accuracy")
    acc = np.mean(est.fit(images["X"], images["y"]).predict(images["X_test"]) == images["y_test"])
    shuffled = np.random.default_rng(1).permutation(images["y"])
    acc_shuffled = np.mean(
        clone(est).fit(images["X"], shuffled).predict(images["X_test"]) == images["y_test"]
    )
    assert acc >= 0.75 and acc > acc_shuffled
