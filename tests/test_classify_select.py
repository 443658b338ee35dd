"""Automatic selection: the honest estimate, space choice, recipes that round-trip, and
predicting that leaves a fitted model alone (issue 12 items 3 and 5, issue 16 item 12)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits

from deepfeat.classify import TransferClassifier
from deepfeat.classify.embedder import ImageEmbedder
from deepfeat.classify.persistence import load, save
from deepfeat.classify.search import EmbeddingClassifier
from deepfeat.classify.select_logme import logme_score
from deepfeat.classify.select_space import select_space
from deepfeat.classify.space_embedders import embedder_parts
from deepfeat.classify.spaces import late_cut_points

SMALL = "torchvision:mobilenet_v3_small"  # random weights: offline and fast


def _near_copies(X: np.ndarray, k: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"copy{i}": X + 0.05 * rng.normal(size=X.shape) for i in range(k)}


def test_shuffled_labels_do_not_inflate_the_honest_estimate():
    """Negative control: many near-identical candidate spaces x the head grid on labels
    that carry no signal. The winner's CV score is the maximum of ~100 noisy estimates
    (optimistic); the honest estimate must stay near chance."""
    X, y = load_digits(n_class=4, return_X_y=True)
    X, y = X[:160], y[:160]
    shuffled = np.random.default_rng(0).permutation(y)
    spaces = _near_copies(X, 6)
    choice = select_space(spaces, shuffled, max_cv_spaces=6)
    n_cands = len(choice.candidates)
    assert n_cands >= 6 * 15
    chance = 0.25
    assert choice.optimistic_score > choice.honest_score
    assert abs(choice.honest_score - chance) < 0.08, (choice.honest_score, n_cands)
    # positive control: the same search on the true labels is honest and high
    good = select_space(spaces, y, max_cv_spaces=6)
    assert good.honest_score > 0.9


def test_honest_estimate_tracks_held_out_accuracy():
    X, y = load_digits(n_class=6, return_X_y=True)
    rng = np.random.default_rng(1)
    idx = rng.permutation(len(y))
    tr, te = idx[:150], idx[150:]
    clf = EmbeddingClassifier(heads="logreg").fit(X[tr], y[tr])
    held_out = clf.score(X[te], y[te])
    assert abs(clf.honest_score_ - held_out) < 0.06
    assert clf.honest_score_ <= clf.best_score_ + 1e-9


def test_space_choice_prefers_the_informative_space_and_lists_every_try():
    X, y = load_digits(n_class=5, return_X_y=True)
    X, y = X[:200], y[:200]
    rng = np.random.default_rng(0)
    spaces = {"noise": rng.normal(size=(200, 64)), "weak": X[:, :8] + rng.normal(size=(200, 8))}
    spaces.update({"digits": X, "noise2": rng.normal(size=(200, 32)), "noise3": rng.normal(size=(200, 16))})
    choice = select_space(spaces, y, max_cv_spaces=2)
    assert choice.space == "digits"
    status = {t["space"]: t["status"] for t in choice.tried}
    # the first space is always cross-validated; the rest compete on LogME for one slot
    assert status["noise"] == "cross-validated" and status["digits"] == "cross-validated"
    assert all(status[n] == "pruned by LogME" for n in ("weak", "noise2", "noise3"))
    assert logme_score(X, y) > logme_score(spaces["noise2"], y)
    assert {c["space"] for c in choice.candidates} == {"noise", "digits"}


def test_one_se_rule_prefers_stronger_regularisation_than_the_best_mean():
    X, y = load_digits(n_class=4, return_X_y=True)
    X, y = X[:120], y[:120]
    best = EmbeddingClassifier("logreg", selection="best").fit(X, y)
    one_se = EmbeddingClassifier("logreg").fit(X, y)
    assert one_se.best_params_["C"] <= best.best_params_["C"]
    assert one_se.best_score_ >= best.best_score_ - best.best_std_ / np.sqrt(best.n_splits_)


# ------------------------------------------------------------------------- images
def _images(n: int = 10, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    for i in range(n):
        base = np.zeros((48, 48, 3), np.uint8)
        if i % 2:
            base[:, :24] = 220  # bright left half
        else:
            base[:24, :] = 220  # bright top half
        imgs.append(np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8))
        labels.append("left" if i % 2 else "top")
    return imgs, np.array(labels)


@pytest.fixture(scope="module")
def concat_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("select")
    imgs, y = _images(12)
    (late,) = late_cut_points(SMALL)
    parts = [{"backbone": SMALL}, {"backbone": SMALL, "layer": late}]
    if "tta" in ImageEmbedder().get_params():  # flip-TTA where the embedder has it
        parts[0]["tta"] = "flip"
    clf = TransferClassifier(
        ImageEmbedder(SMALL, weights=None, cache=str(root / "c.h5"), device="cpu"), EmbeddingClassifier("logreg"),
        spaces=[parts],
    ).fit(imgs, y)
    return clf, imgs, y, root


def test_concatenated_space_round_trips_in_a_fresh_process(concat_model):
    clf, imgs, y, root = concat_model
    assert "+" in clf.space_ and len(clf.space_spec_) == 2
    assert clf.selection_["chosen"]["parts"] == clf.space_spec_
    path = save(clf, root / "m.joblib")
    arr = root / "imgs.npy"
    np.save(arr, np.stack(imgs))
    want = clf.predict_proba(imgs)
    code = (
        "import json, sys, numpy as np\n"
        "from deepfeat.classify.persistence import load\n"
        f"m = load({str(path)!r})\n"
        f"X = list(np.load({str(arr)!r}))\n"
        "print(json.dumps({'proba': m.predict_proba(X).tolist(), 'space': m.space_}))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["space"] == clf.space_
    np.testing.assert_array_equal(np.asarray(got["proba"]), want)
    # the same model loaded here predicts the same, from a different cache
    again = load(path).set_params(embedder__cache=str(root / "other.h5"))
    np.testing.assert_array_equal(again.predict_proba(imgs), want)


def test_concatenated_parts_are_each_scaled_to_unit_length_in_fit_and_predict(concat_model):
    """Each part of a concatenation weighs the same in every image: the head sees each
    part's rows at unit length, in fit and in predict alike; a model saved before parts were
    scaled (no ``part_norm_``) keeps joining them as they are."""
    from deepfeat.classify.space_embedders import embed
    from deepfeat.classify.spaces import join_parts

    clf, imgs, _, _ = concat_model
    assert clf.part_norm_ == "l2"
    parts = [e.embed(imgs).features for e in embedder_parts(clf.embedder_)]
    raw = np.hstack(parts)
    joined = clf._embed(imgs).features
    widths = np.cumsum([p.shape[1] for p in parts])[:-1]
    for block in np.split(joined, widths, axis=1):
        np.testing.assert_allclose(np.linalg.norm(block, axis=1), 1.0, rtol=1e-5)
    # negative control: the parts' own scales differ, so plain side by side is not that
    assert not np.allclose(np.linalg.norm(np.split(raw, widths, axis=1)[0], axis=1), 1.0)
    np.testing.assert_allclose(joined, join_parts(parts), rtol=1e-6)
    head = clf.search_
    np.testing.assert_array_equal(clf.predict_proba(imgs), head.predict_proba(joined))
    legacy = copy.copy(clf)
    del legacy.part_norm_
    np.testing.assert_allclose(legacy._embed(imgs).features, raw, rtol=1e-6)
    np.testing.assert_array_equal(embed(clf.embedder_, imgs).features, raw)


def test_join_parts_keeps_failed_rows_and_refuses_unknown_norms():
    from deepfeat.classify.spaces import join_parts
    from deepfeat.exceptions import InvalidParameterError

    a = np.array([[3.0, 4.0], [np.nan, np.nan], [0.0, 0.0]])
    b = np.array([[0.0, 2.0], [1.0, 0.0], [5.0, 0.0]])
    out = join_parts([a, b])
    np.testing.assert_allclose(out[0], [0.6, 0.8, 0.0, 1.0])
    assert np.isnan(out[1, :2]).all() and np.isfinite(out[1, 2:]).all()
    np.testing.assert_array_equal(out[2], [0.0, 0.0, 1.0, 0.0])  # an all-zero part stays zero
    np.testing.assert_array_equal(join_parts([a]), a)  # one part: the space itself
    np.testing.assert_array_equal(join_parts([a, b], None), np.hstack([a, b]))
    with pytest.raises(InvalidParameterError, match="norm"):
        join_parts([a, b], "max")


def test_predict_does_not_change_fitted_state(concat_model, tmp_path):
    """Issue 16 item 12: new runtime settings act on a copy of embedder_."""
    clf, imgs, _, _ = concat_model
    before = [copy.deepcopy(e.get_params()) for e in embedder_parts(clf.embedder_)]
    state = {k: v for k, v in vars(clf).items()}
    runtime = {k: clf.embedder.get_params()[k] for k in ("cache", "batch_size")}
    clf.set_params(embedder__cache=str(tmp_path / "elsewhere.h5"), embedder__batch_size=3)
    try:
        clf.predict(imgs[:4])
        assert [e.get_params() for e in embedder_parts(clf.embedder_)] == before
        assert all(vars(clf)[k] is v for k, v in state.items() if k.endswith("_"))
    finally:
        clf.set_params(embedder__cache=runtime["cache"], embedder__batch_size=runtime["batch_size"])
    one = TransferClassifier(ImageEmbedder(SMALL, weights=None, device="cpu"), EmbeddingClassifier("logreg"),
                             spaces=None)
    one.fit(*_images(8, seed=3))
    emb_params = one.embedder_.get_params()
    one.set_params(embedder__batch_size=2).predict(_images(4, seed=4)[0])
    assert one.embedder_.get_params() == emb_params
    # a model fitted with embedder=None takes new runtime settings too, on a copy
    anon = TransferClassifier(search=EmbeddingClassifier("logreg"), spaces=None).fit(*_images(8, seed=3))
    fitted = anon.embedder_.get_params()
    assert anon.set_embedder_params(batch_size=2, jit=False).embedder.get_params()["batch_size"] == 2
    anon.predict(_images(4, seed=4)[0])
    assert anon.embedder_.get_params() == fitted


def test_time_budget_keeps_the_first_space_and_says_what_was_skipped(tmp_path):
    imgs, y = _images(10, seed=5)
    (late,) = late_cut_points(SMALL)
    clf = TransferClassifier(
        ImageEmbedder(SMALL, weights=None, cache=str(tmp_path / "c.h5"), device="cpu"),
        EmbeddingClassifier("logreg"),
        spaces=[{"backbone": SMALL}, {"backbone": SMALL, "layer": late}],
        time_budget=1e-3,
    ).fit(imgs, y)
    assert clf.space_ == SMALL + "[random]"
    status = {s["space"]: s["status"] for s in clf.selection_["spaces"]}
    assert status[f"{SMALL}@{late}[random]"] == "skipped: time budget"


@pytest.mark.slow  # a whole experiment with its report: ~2 min on a loaded 2-core machine
def test_experiment_select_auto_adds_a_curve_chosen_inside_each_draw(tmp_path, monkeypatch):
    import pandas as pd
    from PIL import Image

    from deepfeat.pipelines import plots, run_experiment
    from deepfeat.pipelines.experiment_spaces import AUTO, LAYER

    drawn = {}

    def spy(summary, labels, path, **kw):
        drawn.update(labels=dict(labels), fit=kw.get("extrapolation"))
        return real(summary, labels, path, **kw)

    real = plots.plot_learning_curves
    monkeypatch.setattr(plots, "plot_learning_curves", spy)

    src = tmp_path / "data"
    imgs, y = _images(16, seed=7)
    for i, (img, label) in enumerate(zip(imgs, y)):
        (src / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(src / label / f"{i}.png")
    res = run_experiment(
        src,
        tmp_path / "report",
        layers=["blocks.5"],
        shots="2,3,4",
        repeats=1,
        baselines=(),
        targets=(0.9,),
        cache=tmp_path / "c.h5",
        featurizer_options={"device": "cpu"},
        select="auto",
    )
    table = res.table
    assert set(table.space) == {"efficientnet_lite0", "efficientnet_lite0@blocks.5", "auto"}
    auto = table[table.space == "auto"]
    assert len(auto) == 3 and auto.accuracy.between(0, 1).all()
    # the auto curve is itself: its own role in summary.csv, a line of the learning-curve
    # figure and a row of its table, not a cut point of the layer sweep
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    roles = summary.drop_duplicates("space").set_index("space").role
    assert roles["auto"] == AUTO and roles["efficientnet_lite0@blocks.5"] == LAYER
    assert "auto" in drawn["labels"] and "efficientnet_lite0@blocks.5" not in drawn["labels"]
    html = (tmp_path / "report" / "report.html").read_text()
    curves = html[html.index("<h2>Learning curves</h2>"):html.index("<h2>Layer sweep</h2>")]
    assert f"{res.spaces[-1].label} ({AUTO})" in curves
    sweep = html[html.index("<h2>Layer sweep</h2>"):]
    assert AUTO not in sweep[: sweep.index("</table>")]
    # "how many labels" is answered for the space fit would choose
    assert res.labels_space == "auto" and res.to_dict()["labels_space"] == "auto"
    ex = res.extrapolations["auto"]
    assert (drawn["fit"] is None) == bool(ex.refused)
    if drawn["fit"] is not None:
        assert drawn["fit"][0] == "auto"
    # the choice is made inside the draw among fit's own candidates (not the experiment's
    # spaces): its recipe names one of them
    from deepfeat.classify.spaces import space_name

    chosen = {json.loads(p)["space"] for p in auto.best_params if p}
    assert chosen and chosen <= {space_name(s) for s in TransferClassifier().candidate_spaces()}
    assert (tmp_path / "report" / "report.html").is_file()


def test_default_candidates_end_with_the_zoo_ensemble_only_where_it_belongs():
    from deepfeat.classify.spaces import default_space_specs, ensemble_members, space_parts
    from deepfeat.classify.transfer import TransferClassifier

    zoo = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
    assert ensemble_members(None) == ensemble_members(["efficientnet_lite0"]) == zoo
    last = space_parts(default_space_specs()[-1])
    assert {p["backbone"] for p in last} == set(zoo)
    assert [p for p in last if p.get("tta") == "flip"] and [p for p in last if p.get("layer")]
    assert len(default_space_specs(ensemble=False)) == len(default_space_specs()) - 1
    # one other backbone: no ensemble; two named backbones: theirs
    assert ensemble_members(["torchvision:resnet18"]) == ()
    two = space_parts(default_space_specs(["efficientnet_lite0", "torchvision:resnet18"])[-1])
    assert {p["backbone"] for p in two} == {"efficientnet_lite0", "torchvision:resnet18"}
    # random weights or a checkpoint of one backbone never bring the zoo's pretrained nets in
    for kw in ({}, {"weights": None}, {"checkpoint": "ft.pt"}):
        specs = TransferClassifier(ImageEmbedder(**kw), spaces="auto").candidate_spaces()
        backbones = {p["backbone"] for s in specs for p in s}
        assert (backbones == set(zoo)) if not kw else (backbones == {"efficientnet_lite0"})


def test_cli_fit_leaves_the_ensemble_out_of_a_finetune(tmp_path):
    from deepfeat.cli.cmd_fit import candidate_spaces
    from deepfeat.cli.main import build_parser

    def backbones(*extra):
        args = build_parser("fit")[0].parse_args(["fit", str(tmp_path), "--out", str(tmp_path / "m.joblib"), *extra])
        # the CLI passes "auto" (resolved by the estimator) or an explicit list of specs
        clf = TransferClassifier(ImageEmbedder(weights=args.weights), spaces=candidate_spaces(args))
        return {p["backbone"] for s in clf.candidate_spaces() for p in s}

    assert "efficientnet_lite2" in backbones()
    assert backbones("--finetune") == backbones("--weights", "none") == {"efficientnet_lite0"}


def test_an_ensemble_space_is_skipped_above_its_image_limit(tmp_path, monkeypatch):
    import deepfeat.classify.transfer as transfer

    imgs, y = _images(10, seed=6)
    other = "torchvision:resnet18"
    emb = ImageEmbedder(SMALL, weights=None, cache=str(tmp_path / "c.h5"), device="cpu")
    kw = dict(search=EmbeddingClassifier("logreg"),
              spaces=[{"backbone": SMALL}, [{"backbone": SMALL}, {"backbone": other}]])

    def status(clf):
        return {s["space"]: s["status"] for s in clf.selection_["spaces"]}

    ens = f"{SMALL}[random]+{other}[random]"
    # control: under the limit the mixed-backbone space is cross-validated
    assert status(TransferClassifier(emb, **kw).fit(imgs, y))[ens] == "cross-validated"
    monkeypatch.setattr(transfer, "ENSEMBLE_MAX_IMAGES", 8)
    clf = TransferClassifier(emb, **kw).fit(imgs, y)
    assert status(clf)[ens] == "skipped: an ensemble, with more than 8 images"
    assert clf.space_ == f"{SMALL}[random]"
