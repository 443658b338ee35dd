"""Inference cost in the choice of the space: the one-SE rule prefers the cheaper space
within noise, the bounds skip costlier candidates, and the model states its cost."""

from __future__ import annotations

import numpy as np
import pytest
from serve_models import TINY, tone_images

from deepfeat.classify import EmbeddingClassifier, ImageEmbedder, TransferClassifier
from deepfeat.classify.cost import forward_passes
from deepfeat.classify.select_rule import bbc_estimate, choose
from deepfeat.cli.main import main
from deepfeat.exceptions import InvalidParameterError

FAMILIES = ["cheap|logreg"] * 2 + ["dear|logreg"] * 2
STRENGTH = np.array([0.1, 1.0, 0.1, 1.0])
COST = np.array([1, 1, 9, 9])


@pytest.mark.parametrize("gain, chosen_space", [(0.01, "cheap"), (0.08, "dear")])
def test_a_dearer_space_wins_only_beyond_one_standard_error(gain, chosen_space):
    means = np.array([0.80, 0.85, 0.80, 0.85 + gain])
    stds = np.full(4, 0.04)  # 5 folds: one SE = 0.018
    losses = np.full(4, np.nan)
    got = choose(means, stds, losses, 5, FAMILIES, STRENGTH, cost=COST)
    assert FAMILIES[got].startswith(chosen_space)
    # without costs the dear space wins either way: the cost is what decides
    assert FAMILIES[choose(means, stds, losses, 5, FAMILIES, STRENGTH)].startswith("dear")


def test_the_honest_estimate_runs_the_same_cost_rule():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    good = np.where(rng.random(300) < 0.85, y, 1 - y)  # a cheap candidate at 85 %
    dear = np.where(rng.random(300) < 0.86, y, 1 - y)  # a dear one within noise of it
    preds = np.vstack([good, good, dear, dear])
    with_cost = bbc_estimate(preds, y, FAMILIES, STRENGTH, cost=COST)
    without = bbc_estimate(preds, y, FAMILIES, STRENGTH)
    assert with_cost["n_bootstrap"] == without["n_bootstrap"] > 0
    assert abs(with_cost["score"] - (good == y).mean()) < abs(without["score"] - (good == y).mean()) + 1e-9


RANK = np.array([0, 0, 1, 1])  # "cheap" listed first, both at the same cost below


@pytest.mark.parametrize("gain, chosen_space", [(0.01, "cheap"), (0.08, "dear")])
def test_a_later_space_of_the_same_cost_wins_only_beyond_one_standard_error(gain, chosen_space):
    means = np.array([0.80, 0.85, 0.80, 0.85 + gain])
    stds = np.full(4, 0.04)
    losses = np.full(4, np.nan)
    same = np.ones(4)
    assert FAMILIES[choose(means, stds, losses, 5, FAMILIES, STRENGTH, cost=same, rank=RANK)].startswith(chosen_space)
    # the cost still comes first: a preferred space that costs more loses within noise
    assert FAMILIES[choose(means, stds, losses, 5, FAMILIES, STRENGTH, cost=COST[::-1].copy(),
                           rank=RANK)].startswith("dear")
    # without the rank the later space wins either way
    assert FAMILIES[choose(means, stds, losses, 5, FAMILIES, STRENGTH, cost=same)].startswith("dear")


def test_the_honest_estimate_runs_the_same_preference_rule():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    first = np.where(rng.random(300) < 0.85, y, 1 - y)
    later = np.where(rng.random(300) < 0.86, y, 1 - y)  # within noise of the first
    preds = np.vstack([first, first, later, later])
    ranked = bbc_estimate(preds, y, FAMILIES, STRENGTH, rank=RANK)
    plain = bbc_estimate(preds, y, FAMILIES, STRENGTH)
    assert abs(ranked["score"] - (first == y).mean()) < abs(plain["score"] - (first == y).mean()) + 1e-9


def test_ordered_select_space_keeps_the_first_space_unless_a_later_one_is_better_beyond_noise():
    from sklearn.datasets import load_digits

    from deepfeat.classify.select_space import select_space

    X, y = load_digits(return_X_y=True)
    X, y = X[:200], y[:200]
    rng = np.random.default_rng(3)
    a, b = (X + rng.normal(scale=5.5, size=X.shape) for _ in range(2))  # equally noisy copies
    search = EmbeddingClassifier("logreg", preprocessing="standardize", random_state=0)
    first_a = select_space({"a": a, "b": b}, y, search, ordered=True)
    scores = {t["space"]: t["best_cv_score"] for t in first_a.tried}
    assert scores["b"] > scores["a"]  # b scores higher, within noise: a, listed first, is kept
    assert first_a.space == "a"
    assert select_space({"b": b, "a": a}, y, search, ordered=True).space == "b"  # the order decides
    assert select_space({"a": a, "b": b}, y, search).space == "b"  # unordered: the best mean
    # a later space better beyond noise is still chosen
    noise = rng.normal(size=X.shape)
    assert select_space({"noise": noise, "clean": X}, y, search, ordered=True).space == "clean"


class _Chosen(Exception):
    """Raised by the spy below once select_space has been called: the test needs no more."""


def _ordered_in_fit(monkeypatch, clf, X, y) -> bool:
    import deepfeat.classify.transfer as transfer

    seen = {}

    def spy(*args, **kwargs):
        seen["ordered"] = kwargs.get("ordered", False)
        raise _Chosen

    monkeypatch.setattr(transfer, "select_space", spy)
    with pytest.raises(_Chosen):
        clf.fit(X, y)
    return seen["ordered"]


def test_fit_orders_the_text_spaces_and_not_the_image_spaces(monkeypatch, tmp_path):
    pytest.importorskip("transformers")
    from text_data import RUNTIME, split

    from deepfeat.classify import TextEmbedder

    data = split()
    texts = TransferClassifier(TextEmbedder(cache=str(tmp_path / "t.h5"), **RUNTIME),
                               spaces=[{"backbone": "minilm"}, [{"backbone": "minilm"}, {"backbone": "tfidf"}]])
    assert _ordered_in_fit(monkeypatch, texts, data["X"][:12], data["y"][:12]) is True
    X, y = tone_images(4)
    images = TransferClassifier(ImageEmbedder(**TINY, cache=str(tmp_path / "i.h5")), spaces=SPACES)
    assert _ordered_in_fit(monkeypatch, images, X, y) is False


def test_forward_passes_count_flips_twice():
    assert forward_passes([{"backbone": "a"}]) == 1
    assert forward_passes([{"backbone": "a", "tta": "flip"}, {"backbone": "b", "layer": "x"}]) == 3


SPACES = [[{"backbone": TINY["backbone"], "weights": None}],
          [{"backbone": TINY["backbone"], "weights": None}, {"backbone": TINY["backbone"], "weights": None,
                                                             "layer": "features.9", "tta": "flip"}]]


def test_max_cost_skips_costlier_spaces_and_the_model_states_its_cost(tmp_path):
    X, y = tone_images(6)
    # its own cache: with the process's temporary one, another test of the same process may
    # have embedded these images already, and a network never built is not timed
    clf = TransferClassifier(ImageEmbedder(**TINY, cache=str(tmp_path / "c.h5")), EmbeddingClassifier("logreg"),
                             spaces=SPACES, max_cost=2).fit(X, y)
    rows = {r["space"]: r for r in clf.selection_["spaces"]}
    dear = [r for r in rows.values() if "[flip]" in r["space"]]
    assert len(dear) == 1 and dear[0]["status"].startswith("skipped: 3 forward passes > max_cost=2")
    assert clf.cost_["forward_passes"] == 1 and clf.cost_["ms_per_image"] > 0  # built: timed
    assert clf.selection_["cost"] == clf.cost_
    with pytest.raises(InvalidParameterError, match="'max_cost' parameter of TransferClassifier must be an int"):
        TransferClassifier(ImageEmbedder(**TINY), max_cost=0).fit(X, y)
    with pytest.raises(InvalidParameterError, match="no candidate space within"):
        TransferClassifier(ImageEmbedder(**TINY), spaces=SPACES[1:], max_cost=2).fit(X, y)


def test_max_ms_per_image_times_the_networks_first():
    X, y = tone_images(6)
    clf = TransferClassifier(ImageEmbedder(**TINY), EmbeddingClassifier("logreg"), spaces=SPACES,
                             max_ms_per_image=1e6).fit(X, y)
    assert all(r["ms_per_image"] > 0 for r in clf.selection_["spaces"])
    with pytest.raises(InvalidParameterError, match="no candidate space within"):
        TransferClassifier(ImageEmbedder(**TINY), spaces=SPACES, max_ms_per_image=1e-6).fit(X, y)


def test_a_network_is_timed_once_per_process_and_runtime(monkeypatch):
    from deepfeat.classify import cost
    from deepfeat.featurize import Featurizer

    monkeypatch.setattr(cost, "_timed", {})  # this test's own record, whatever ran before
    runs = []

    def counting(f):
        embed = f.embed_pixels
        monkeypatch.setattr(f, "embed_pixels", lambda batch: runs.append(len(batch)) or embed(batch))
        return f

    a = counting(Featurizer(**{k: TINY[k] for k in ("backbone", "weights", "device", "precision")}))
    ms = cost.time_part(a)
    assert ms > 0 and runs == [1, cost.TIMED_IMAGES, cost.TIMED_IMAGES]  # warm-up, then 2 batches
    b = counting(Featurizer(**{k: TINY[k] for k in ("backbone", "weights", "device", "precision")}))
    assert cost.time_part(b) == ms and len(runs) == 3  # the same network and runtime: not re-run
    # negative controls: another cut point, or another batch, is timed anew
    c = counting(Featurizer(**{k: TINY[k] for k in ("backbone", "weights", "device", "precision")},
                            layer="features.9"))
    cost.time_part(c)
    assert len(runs) == 6
    cost.time_part(b, n_images=2)
    assert runs[6:] == [1, 2, 2]


def test_fit_cli_refuses_a_bad_bound(capsys, tmp_path):
    assert main(["fit", str(tmp_path), "--out", str(tmp_path / "m.joblib"), "--max-cost", "0"]) == 2
    assert "--max-cost" in capsys.readouterr().err


def test_deployable_onnx_leaves_out_the_heads_export_refuses(capsys, tmp_path):
    from deepfeat.cli.cmd_fit import deployable_heads

    assert deployable_heads(("logreg", "rbfsvm"), "any") == (("logreg", "rbfsvm"), [])
    heads, notes = deployable_heads(("logreg", "rbfsvm"), "onnx")
    assert heads == "logreg" and "rbfsvm" in notes[0]
    assert deployable_heads(("auto",), "onnx") == (("auto",), [])
    argv = ["fit", str(tmp_path), "--out", str(tmp_path / "m.joblib"), "--heads", "rbfsvm", "--deployable", "onnx"]
    assert main(argv) == 2
    assert "ONNX export refuses" in capsys.readouterr().err


def test_a_model_saved_before_the_cost_bounds_loads_with_their_defaults():
    import pickle

    old = TransferClassifier(ImageEmbedder(**TINY))
    del old.max_cost, old.max_ms_per_image  # as pickled by a deepfeat without them
    with pytest.raises(AttributeError):
        old.get_params()
    back = pickle.loads(pickle.dumps(old))
    assert back.get_params()["max_cost"] is None and back.get_params()["max_ms_per_image"] is None
    assert back.set_params(embedder__device="cpu").embedder.device == "cpu"
