"""The array-level search: folds for small data, the fast search, calibration, sklearn's checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_blobs, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from deepfeat.classify.calibration import TemperatureScaledClassifier
from deepfeat.classify.candidates import FULL_GRID, HEADS, make_preprocess, resolve_grid
from deepfeat.classify.cv import small_data_cv
from deepfeat.classify.search import EmbeddingClassifier, build_search
from deepfeat.exceptions import InputError

#: A small grid so that sklearn's ~55 checks per estimator stay fast; the code paths are
#: those of the default grid (the full default instance is checked under ``-m slow``).
SMALL_GRID = {
    "logreg": {"C": [0.01, 1.0]},
    "linsvm": {"C": [1.0]},
    "rbfsvm": {"C": [10.0], "gamma_factor": [1.0]},
}


@parametrize_with_checks(
    [
        TemperatureScaledClassifier(),
        EmbeddingClassifier(preprocessing="standardize", param_grid=SMALL_GRID),
        EmbeddingClassifier(
            "rbfsvm", preprocessing="l2", param_grid=SMALL_GRID
        ),  # calibrated SVM head
    ]
)
@pytest.mark.usefixtures("own_global_rng")  # the test's own code draws from them
def test_sklearn_checks(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks(
    [
        EmbeddingClassifier(),  # the default grid (about 10 minutes on 2 cores)
        EmbeddingClassifier(
            "linsvm", preprocessing="l2+pca_whiten", param_grid=SMALL_GRID, calibrate=False
        ),
        TemperatureScaledClassifier(SVC(kernel="rbf")),
    ]
)
@pytest.mark.usefixtures("own_global_rng")  # the test's own code draws from them
def test_sklearn_checks_more_configurations(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------- folds
def test_small_data_cv_uses_what_the_smallest_class_allows():
    assert small_data_cv([0] * 40 + [1] * 60).get_n_splits() == 5
    cv = small_data_cv([0] * 3 + [1] * 30)
    assert isinstance(cv, RepeatedStratifiedKFold)
    assert cv.get_n_splits() >= 10
    # every fold of a repeated split is stratified and holds each class in training
    y = np.array([0] * 3 + [1] * 30)
    for train, test in cv.split(np.zeros((33, 1)), y):
        assert set(y[train]) == {0, 1} and set(y[test]) == {0, 1}
    assert isinstance(small_data_cv([0] * 12 + [1] * 12, n_splits=3), StratifiedKFold)


def test_small_data_cv_rejects_a_single_example_class_clearly():
    with pytest.raises(InputError, match=r"'cat'.*single example"):
        small_data_cv(["cat"] + ["dog"] * 5)
    with pytest.raises(InputError, match="at least 2 classes"):
        small_data_cv(["dog"] * 5)


# ---------------------------------------------------------------------------- search
def test_default_grid_covers_the_kornblith_protocol():
    Cs = np.array(FULL_GRID["logreg"]["C"])
    assert len(Cs) == 45
    np.testing.assert_allclose(Cs, np.logspace(-6, 5, 45))
    X, y = make_blobs(60, centers=2, n_features=8, random_state=0)
    clf = EmbeddingClassifier(heads="logreg", preprocessing="standardize", grid="full").fit(X, y)
    np.testing.assert_allclose(np.sort(clf.cv_results_["param_C"].astype(float)), Cs)


def test_warm_started_path_matches_a_cold_grid_search():
    """The shared-work search scores candidates as sklearn's GridSearchCV would."""
    X, y = load_digits(n_class=4, return_X_y=True)
    X, y = X[:200], y[:200]
    Cs = [1e-4, 1e-2, 1.0, 100.0]
    cv = StratifiedKFold(4, shuffle=True, random_state=0)
    ours = EmbeddingClassifier(
        "logreg", preprocessing="l2", param_grid={"logreg": {"C": Cs}}, cv=cv
    ).fit(X, y)
    ref = GridSearchCV(
        make_pipeline(Normalizer(), LogisticRegression(max_iter=1000)),
        {"logisticregression__C": Cs},
        cv=cv,
    ).fit(X, y)
    np.testing.assert_allclose(
        ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"], atol=0.011
    )
    assert ours.cv_results_["mean_test_score"].max() > 0.9


@pytest.mark.usefixtures("own_global_rng")  # the test's own code draws from them
def test_precomputed_kernel_svm_matches_sklearn_svc():
    X, y = make_classification(120, n_features=20, n_informative=5, random_state=0)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    grid = {"rbfsvm": {"C": [0.5, 5.0], "gamma_factor": [0.2, 2.0]}}
    ours = EmbeddingClassifier("rbfsvm", preprocessing="standardize", param_grid=grid, cv=cv).fit(
        X, y
    )
    Z = StandardScaler().fit_transform(X)
    scale = 1 / (Z.shape[1] * Z.var())
    for params, score in zip(ours.cv_results_["params"], ours.cv_results_["mean_test_score"]):
        ref = GridSearchCV(
            make_pipeline(
                StandardScaler(), SVC(C=params["C"], gamma=params["gamma_factor"] * scale)
            ),
            {},
            cv=cv,
        ).fit(X, y)
        assert score == pytest.approx(ref.best_score_, abs=1e-9)


def test_search_finds_signal_and_shuffled_labels_score_near_chance():
    X, y = load_digits(n_class=4, return_X_y=True)
    X, y = X[:160], y[:160]
    clf = build_search(["logreg"], y=y).fit(X, y)
    assert clf.best_score_ > 0.9
    shuffled = np.random.default_rng(0).permutation(y)
    bad = EmbeddingClassifier("logreg", preprocessing="standardize").fit(X, shuffled)
    # chance is 0.25; the best of 90 candidates is optimistic but far from 0.9
    assert bad.best_score_ < 0.45
    assert clf.score(X, y) > 0.95


def test_results_frame_and_best_attributes():
    X, y = make_blobs(80, centers=3, n_features=6, random_state=1)
    clf = EmbeddingClassifier(
        HEADS, preprocessing=("standardize", "l2"), param_grid=SMALL_GRID, selection="best"
    ).fit(X, y)
    df = clf.cv_results_frame_
    assert len(df) == 2 * (2 + 1 + 1)
    assert {
        "param_head",
        "param_preprocess",
        "param_C",
        "mean_test_score",
        "std_test_score",
    } <= set(df.columns)
    assert df.loc[0, "mean_test_score"] == clf.best_score_ == df["mean_test_score"].max()
    assert clf.best_params_["head"] in {"logreg", "linsvm", "rbfsvm"}
    assert clf.n_splits_ == 5 and np.isfinite(clf.best_std_)
    assert list(clf.best_estimator_.named_steps) == ["preprocess", "head"]


def test_class_weight_and_scoring_reach_the_heads():
    X, y = make_classification(200, n_features=10, weights=[0.9, 0.1], random_state=0)
    clf = EmbeddingClassifier(
        param_grid=SMALL_GRID, class_weight="balanced", scoring="balanced_accuracy"
    ).fit(X, y)
    head = clf.best_estimator_[-1]
    head = getattr(head, "estimator_", head)
    assert head.class_weight == "balanced"
    assert clf.best_score_ == pytest.approx(np.nanmax(clf.cv_results_["mean_test_score"]))


def test_probability_scoring_leaves_svm_candidates_unscored():
    X, y = make_blobs(60, centers=2, n_features=4, random_state=0)
    clf = EmbeddingClassifier(param_grid=SMALL_GRID, scoring="neg_log_loss").fit(X, y)
    heads = clf.cv_results_["param_head"]
    assert np.isnan(clf.cv_results_["mean_test_score"][heads != "logreg"]).all()
    assert clf.best_params_["head"] == "logreg"


def test_single_example_class_is_refused_like_transfer_classifier():
    """Issue 16 item 12: one behaviour for both estimators (TransferClassifier: the test
    ``test_a_class_with_one_image_is_a_clear_error``): an InputError naming the class."""
    X, y = make_blobs([10, 10, 1], centers=[[0, 0], [5, 5], [0, 5]], random_state=0)
    with pytest.raises(InputError, match=r"class\(es\) 2 have a single example"):
        EmbeddingClassifier().fit(X, y)
    # an explicit splitter is used as given: the search then runs
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn: a class smaller than n_splits
        clf = EmbeddingClassifier("logreg", cv=cv).fit(X, y)
    assert np.isfinite(clf.best_score_) and (clf.predict(X) == y).mean() > 0.9


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"heads": "knn"}, "heads must be among"),
        ({"preprocessing": "l2+zca"}, "unknown step"),
        ({"param_grid": {"logreg": {"gamma": [1]}}}, "unknown parameter"),
        ({"scoring": "acc"}, "acc"),
        ({"class_weight": "auto"}, "class_weight"),
        ({"cv": 1}, "cv"),
    ],
)
def test_bad_parameters_are_named(params, match):
    with pytest.raises(ValueError, match=match):
        EmbeddingClassifier(**params).fit(np.eye(4), [0, 0, 1, 1])


def test_build_search_contract():
    y = np.array([0] * 4 + [1] * 4)
    s = build_search(
        ["logreg", "rbfsvm"], scoring="balanced_accuracy", class_weight="balanced", y=y
    )
    assert s.get_params()["heads"] == ["logreg", "rbfsvm"] and s.scoring == "balanced_accuracy"
    assert isinstance(s.cv, RepeatedStratifiedKFold)
    assert build_search(y=[0, 1, 1]).cv is None  # fit falls back; no error at build time
    assert resolve_grid(["rbfsvm"], None)["rbfsvm"]["gamma_factor"][0] == pytest.approx(0.01)


# ---------------------------------------------------------------------------- calibration
@pytest.mark.usefixtures("own_global_rng")  # the test's own code draws from them
def test_temperature_scaling_improves_svm_probabilities_and_keeps_predictions():
    X, y = make_classification(
        400, n_features=10, n_informative=4, n_classes=3, flip_y=0.1, random_state=0
    )
    Xtr, ytr, Xte, yte = X[:200], y[:200], X[200:], y[200:]
    svm = SVC(kernel="linear", C=1.0, break_ties=True)
    cal = TemperatureScaledClassifier(svm).fit(Xtr, ytr)
    raw = TemperatureScaledClassifier(svm, cv=[]).fit(Xtr, ytr)  # no folds: T stays 1
    assert raw.temperature_ == 1.0 and cal.temperature_ != 1.0
    assert log_loss(yte, cal.predict_proba(Xte)) < log_loss(yte, raw.predict_proba(Xte))
    np.testing.assert_array_equal(cal.predict(Xte), cal.predict_proba(Xte).argmax(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_preprocess("pca_whiten").fit_transform(Xtr).shape[0] == 200


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy"])
def test_fast_metrics_equal_sklearn_scorers(metric):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, make_scorer

    X, y = make_classification(
        150, n_features=30, n_classes=3, n_informative=6, weights=[0.6, 0.3, 0.1], random_state=0
    )
    fn = {"accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score}[metric]
    fast = EmbeddingClassifier(param_grid=SMALL_GRID, scoring=metric).fit(X, y)
    slow = EmbeddingClassifier(param_grid=SMALL_GRID, scoring=make_scorer(fn)).fit(X, y)
    np.testing.assert_allclose(
        fast.cv_results_["mean_test_score"], slow.cv_results_["mean_test_score"]
    )
    assert fast.best_params_ == slow.best_params_


@pytest.mark.parametrize("n_classes,class_weight", [(2, None), (4, "balanced")])
def test_the_c_grid_solved_as_one_path_scores_as_refitting_per_c(monkeypatch, n_classes, class_weight):
    """The search solves the logistic-regression grid in one call of scikit-learn's path
    solver; every score, validation log-loss and prediction equals the per-C refit's."""
    from deepfeat.classify import fold_scores

    assert fold_scores._path_solver() is not None  # the fast path is taken with this scikit-learn
    X, y = load_digits(n_class=n_classes, return_X_y=True)
    X = np.hstack([X[:40], np.random.default_rng(0).normal(size=(40, 300))])  # wide: the row space
    y = y[:40]
    train, test = np.flatnonzero(np.arange(40) % 4 != 0), np.flatnonzero(np.arange(40) % 4 == 0)
    cands = [{"head": "logreg", "C": c} for c in FULL_GRID["logreg"]["C"]]
    cands += [{"head": "linsvm", "C": c} for c in FULL_GRID["linsvm"]["C"]]

    def scored():
        return fold_scores.score_fold(X, y, train, test, "standardize", cands, None, metric="accuracy",
                                      class_weight=class_weight)

    calls = []
    real = fold_scores._logreg_path
    monkeypatch.setattr(fold_scores, "_logreg_path", lambda *a, **k: calls.append(1) or real(*a, **k))
    on_path = scored()
    monkeypatch.setattr(fold_scores, "_logreg_path", lambda *a, **k: None)  # refit per C
    refit = scored()
    assert calls == [1]
    for a, b in zip(on_path[:2] + on_path[4:], refit[:2] + refit[4:]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert on_path[3] == refit[3] == []
    assert np.ptp(on_path[1][:45]) > 0.1  # the grid matters: the log-loss changes along it
