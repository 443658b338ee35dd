"""Fine-tuning (deepfeat.finetune): recipe parts, negative control, kill/resume, reload.

Data: scikit-image's ``lfw_subset`` (25x25 grayscale faces vs non-faces). Backbone:
timm's ``test_efficientnet`` with random (seeded) weights, 160 px: the point of these
tests is the mechanics, not accuracy, and it trains ~10x faster than EfficientNet-Lite0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_run import killable_fit
from PIL import Image
from sklearn.utils.estimator_checks import parametrize_with_checks
from test_classify_images import _CLASSIFIER_EXEMPT

from deepfeat.classify import EmbeddingClassifier, ImageEmbedder, TransferClassifier
from deepfeat.exceptions import InvalidParameterError
from deepfeat.featurize import Featurizer
from deepfeat.featurize.backbones import resolve_backbone
from deepfeat.featurize.runtime import resolve_runtime
from deepfeat.finetune import FineTuneClassifier, Recipe, fine_tune
from deepfeat.finetune.images import PixelBank, load_pixels
from deepfeat.finetune.network import build_network
from deepfeat.finetune.train import build_optimizer

BACKBONE = "timm:test_efficientnet"
REPO = Path(__file__).resolve().parents[1]


def _lfw(n_per_class: int, offset: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    from skimage.data import lfw_subset

    X = (lfw_subset() * 255).astype(np.uint8)  # 100 faces, then 100 non-faces
    idx = list(range(offset, offset + n_per_class)) + list(range(100 + offset, 100 + offset + n_per_class))
    return [X[i] for i in idx], np.array(["face"] * n_per_class + ["other"] * n_per_class)


def _transfer(cache: Path | None) -> TransferClassifier:
    emb = ImageEmbedder(BACKBONE, weights=None, device="cpu", cache=None if cache is None else str(cache))
    return TransferClassifier(emb, EmbeddingClassifier("logreg", preprocessing="standardize"), spaces=None)


@pytest.fixture(scope="module")
def lfw() -> dict:
    Xtr, ytr = _lfw(12)
    Xte, yte = _lfw(15, offset=50)
    return {"Xtr": Xtr, "ytr": ytr, "Xte": Xte, "yte": yte}


@pytest.fixture(scope="module")
def fitted(lfw: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A frozen twin, a fine-tune with lr=0 (negative control) and a real one, one cache."""
    d = tmp_path_factory.mktemp("ft")
    cache = d / "features.h5"
    frozen = _transfer(cache).fit(lfw["Xtr"], lfw["ytr"])
    kw = {"epochs": 2, "freeze": 0, "val_fraction": 0.0, "work_dir": str(d / "work")}
    noop = FineTuneClassifier(_transfer(cache), lr=0.0, **kw).fit(lfw["Xtr"], lfw["ytr"])
    tuned = FineTuneClassifier(_transfer(cache), lr=5e-3, **kw).fit(lfw["Xtr"], lfw["ytr"])
    return {"frozen": frozen, "noop": noop, "tuned": tuned, "dir": d}


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())


def test_recipe_rejects_bad_values_naming_the_parameter() -> None:
    with pytest.raises(InvalidParameterError, match="layer_decay must be in \\(0, 1\\]; got 0"):
        Recipe(layer_decay=0)
    with pytest.raises(InvalidParameterError, match="epochs must be an integer >= 1; got 0"):
        FineTuneClassifier(epochs=0).fit([np.zeros((8, 8), np.uint8)] * 2, [0, 1])
    with pytest.raises(InvalidParameterError, match="bn must be one of"):
        Recipe(bn="sometimes")


def test_layer_decay_gives_each_block_its_own_learning_rate() -> None:
    net, _ = build_network(resolve_backbone(BACKBONE, weights=None), None, "avg", 2)
    recipe = Recipe(freeze=1, layer_decay=0.5, warmup_epochs=1, epochs=4)
    opt, sched = build_optimizer(net, recipe, n_batches=3)
    sched.step_update(num_updates=3)  # past warm-up: on the cosine
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    names = dict(net.named_parameters())
    in_opt = {n for n, p in names.items() if id(p) in lr_of}
    assert {n for n in names if net.block_of(n) == 0}.isdisjoint(in_opt)  # frozen: not optimised
    head = lr_of[id(net.head.weight)]
    assert 0.5 * recipe.lr < head <= recipe.lr
    blocks = sorted({net.block_of(n) for n in in_opt} - {net.n_blocks})
    assert len(blocks) >= 2
    for n in in_opt:
        b = net.block_of(n)
        assert lr_of[id(names[n])] == pytest.approx(head * 0.5 ** (net.n_blocks - b), rel=1e-6), n
    # control: without decay every group gets the head's rate
    opt1, sched1 = build_optimizer(net, Recipe(freeze=1, layer_decay=1.0, epochs=4), n_batches=3)
    sched1.step_update(num_updates=3)
    assert len({round(g["lr"], 12) for g in opt1.param_groups}) == 1


def test_gradual_unfreezing_trains_one_more_block_each_epoch(lfw: dict) -> None:
    rb = resolve_backbone(BACKBONE, weights=None)
    net, _ = build_network(rb, None, "avg", 2)
    bank = load_pixels(lfw["Xtr"][:6] + lfw["Xtr"][-6:], rb.preprocess)
    y = np.array([0] * 6 + [1] * 6)
    res = fine_tune(net, bank, y, Recipe(epochs=3, gradual_unfreeze=True, freeze=0, val_fraction=0),
                    resolve_runtime("cpu", "fp32"))
    trainable = [h["trainable"] for h in res.history]
    assert trainable[0] == sum(p.numel() for p in net.head.parameters())
    assert trainable[0] < trainable[1] < trainable[2]


@pytest.mark.usefixtures("own_global_rng")  # the test's own code draws from them
def test_augmentation_is_seeded_and_centre_crop_is_the_backbones(lfw: dict) -> None:
    rb = resolve_backbone(BACKBONE, weights=None)
    bank = load_pixels(lfw["Xtr"][:4], rb.preprocess)
    torch.manual_seed(1)
    a = bank.train_batch([0, 1], augment=True)
    torch.manual_seed(1)
    b = bank.train_batch([0, 1], augment=True)
    assert torch.equal(a, b) and a.shape[-2:] == torch.Size(rb.preprocess.crop)
    assert not torch.equal(a, bank.eval_batch([0, 1]))
    # the centre crop of the stored square is what the featurizer's geometry produces
    from deepfeat.featurize.decode import decode_image

    ref = rb.preprocess.geometry(decode_image(lfw["Xtr"][0]))
    assert (bank.eval_batch([0])[0].int() - ref.int()).abs().max() <= 3
    assert isinstance(bank, PixelBank)


def test_lr0_negative_control_leaves_backbone_and_decisions_unchanged(fitted: dict, lfw: dict) -> None:
    noop, frozen = fitted["noop"], fitted["frozen"]
    initial = resolve_backbone(BACKBONE, weights=None).build().state_dict()
    after = torch.load(noop.checkpoint_, weights_only=True)
    assert _max_diff(initial, after) == 0.0
    e_frozen = Featurizer(BACKBONE, weights=None, device="cpu").featurize(lfw["Xte"]).features
    e_noop = Featurizer(BACKBONE, weights=None, checkpoint=noop.checkpoint_, device="cpu").featurize(lfw["Xte"]).features
    np.testing.assert_allclose(e_noop, e_frozen, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(noop.decision_function(lfw["Xte"]), frozen.decision_function(lfw["Xte"]),
                               rtol=1e-4, atol=1e-5)


def test_finetuning_changes_weights_and_decisions(fitted: dict, lfw: dict) -> None:
    tuned, frozen = fitted["tuned"], fitted["frozen"]
    initial = resolve_backbone(BACKBONE, weights=None).build().state_dict()
    after = torch.load(tuned.checkpoint_, weights_only=True)
    assert _max_diff(initial, after) > 1e-3
    d_t, d_f = tuned.decision_function(lfw["Xte"]), frozen.decision_function(lfw["Xte"])
    assert np.abs(d_t - d_f).max() > 1e-2
    # its embeddings are a feature space of their own in the same cache
    assert tuned.featurizer_spec_["fingerprint"] != frozen.featurizer_spec_["fingerprint"]
    assert tuned.featurizer_spec_["checkpoint"] == tuned.checkpoint_
    assert len(tuned.history_) == 2 and tuned.train_summary_["images_per_second"] > 0
    assert set(tuned.classes_) == {"face", "other"}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_sigkill_mid_training_then_rerun_resumes_to_the_same_weights(
    tmp_path: Path, one_torch_thread: None
) -> None:
    # the reference and the resume run here (one thread, as the child): only the run that
    # is killed needs a process of its own
    (tmp_path / "whole").mkdir()
    whole = killable_fit(str(tmp_path / "whole"))
    broken = tmp_path / "broken"
    broken.mkdir()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("finetune_run.py")), str(broken)],
                            env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not list(broken.glob("*.state.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # right after the first epoch's state is saved
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not list(broken.glob("*.backbone.pt"))
    resumed = killable_fit(str(broken))
    assert resumed.train_summary_["resumed_from"] >= 1
    assert resumed.train_summary_["epochs_run"] < 3
    np.testing.assert_allclose([h["loss"] for h in resumed.history_],
                               [h["loss"] for h in whole.history_], rtol=1e-4)
    a = torch.load(whole.checkpoint_, weights_only=True)
    b = torch.load(resumed.checkpoint_, weights_only=True)
    assert _max_diff(a, b) < 1e-4
    initial = resolve_backbone(BACKBONE, weights=None).build().state_dict()
    assert _max_diff(initial, a) > 1e-3  # it did train: the comparison is not vacuous


_PREDICT = textwrap.dedent("""
    import sys
    import numpy as np
    from deepfeat.classify import load
    model = load(sys.argv[1]).set_params(embedder__cache=None)  # embeddings recomputed from the checkpoint
    paths = open(sys.argv[2]).read().split()
    np.save(sys.argv[3], model.predict_proba(paths))
""")


def test_saved_model_loads_in_a_fresh_process_and_predicts_identically(
    fitted: dict, lfw: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepfeat.classify import save

    monkeypatch.setenv("DEEPFEAT_TRUST_STORE", str(tmp_path / "trust.txt"))
    paths = []
    for i, img in enumerate(lfw["Xte"]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(paths[-1])
    model = save(fitted["tuned"].transfer_, tmp_path / "m.joblib")
    here = fitted["tuned"].predict_proba(paths)
    (tmp_path / "paths.txt").write_text("\n".join(paths))
    (tmp_path / "p.py").write_text(_PREDICT)
    out = subprocess.run([sys.executable, str(tmp_path / "p.py"), model, str(tmp_path / "paths.txt"),
                          str(tmp_path / "p.npy")], env={**_env(), "DEEPFEAT_TRUST_STORE": str(tmp_path / "trust.txt")},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), here, rtol=1e-5, atol=1e-6)
    # the checkpoint is what the model needs: without it, loading fails with a clear error
    os.rename(fitted["tuned"].checkpoint_, fitted["tuned"].checkpoint_ + ".moved")
    try:
        from deepfeat.classify import load

        with pytest.raises(Exception, match="checkpoint file not found"):
            load(model)
    finally:
        os.rename(fitted["tuned"].checkpoint_ + ".moved", fitted["tuned"].checkpoint_)


def test_cli_fit_finetune_writes_an_ordinary_model_that_predict_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepfeat.cli.main import main

    monkeypatch.setenv("DEEPFEAT_TRUST_STORE", str(tmp_path / "trust.txt"))
    X, y = _lfw(6)
    for i, (img, label) in enumerate(zip(X, y)):
        (tmp_path / "data" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "data" / label / f"{i}.png")
    out = tmp_path / "m.joblib"
    args = ["fit", str(tmp_path / "data"), "--out", str(out), "--finetune", "--epochs", "1", "--freeze", "1",
            "--backbone", BACKBONE, "--weights", "none", "--heads", "logreg", "--device", "cpu",
            "--cache", str(tmp_path / "c.h5"), "--json", "-q"]
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out)
    ft = r["finetune"]
    assert len(ft["history"]) == 1 and os.path.isfile(ft["checkpoint"])
    assert Path(ft["checkpoint"]).parent == tmp_path / "m.finetune"
    assert main(["predict", str(out), str(tmp_path / "data"), "--out", str(tmp_path / "p.csv"), "--json", "-q"]) == 0
    capsys.readouterr()
    import pandas as pd

    table = pd.read_csv(tmp_path / "p.csv")
    assert len(table) == len(X) and set(table.status) == {"ok"}
    # bad recipe value: one clear line, exit code != 0
    assert main([*args[:-2], "--epochs", "0", "--json", "-q"]) != 0
    assert "epochs must be an integer >= 1" in json.loads(capsys.readouterr().out)["error"]


# sklearn's checks, with the image estimators' exemptions (they fit on 2-d numeric arrays,
# which image estimators reject; see test_classify_images.py for the reasoning)


@parametrize_with_checks([FineTuneClassifier()], expected_failed_checks=lambda e: _CLASSIFIER_EXEMPT,
                         xfail_strict=True)
def test_sklearn_checks_that_apply_to_image_input(estimator, check) -> None:
    check(estimator)
