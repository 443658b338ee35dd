"""``run_experiment(strategies="frozen,finetune")``: both strategies on the same draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfeat.exceptions import InvalidParameterError
from deepfeat.pipelines.strategies import parse_strategies


def test_parse_strategies() -> None:
    assert parse_strategies("frozen,finetune") == ("frozen", "finetune")
    with pytest.raises(InvalidParameterError, match="subset of frozen,finetune; got 'frozen,lora'"):
        parse_strategies("frozen,lora")
    with pytest.raises(InvalidParameterError, match="must include 'frozen'"):
        parse_strategies("finetune")


@pytest.mark.slow  # ~40 s of CPU: two small experiments with EfficientNet-Lite0
def test_experiment_compares_frozen_and_finetuned_on_the_same_draws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skimage.data import lfw_subset

    import deepfeat.finetune.compare as compare
    from deepfeat.pipelines.experiment import run_experiment

    X = (lfw_subset() * 255).astype(np.uint8)
    for label, offset in (("face", 0), ("other", 100)):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(X[offset + i]).save(tmp_path / "data" / label / f"{i}.png")
    seen = []
    real = compare.fine_tune

    def spy(net, bank, y, recipe, runtime, **kw):
        seen.append((len(bank), len(y)))
        return real(net, bank, y, recipe, runtime, **kw)

    monkeypatch.setattr(compare, "fine_tune", spy)
    res = run_experiment(
        tmp_path / "data", tmp_path / "out", shots="2,4", repeats=2, baselines=(),
        strategies="frozen,finetune", finetune_options={"epochs": 1, "val_fraction": 0.0},
        featurizer_options={"device": "cpu"},
    )
    cmp = res.strategies
    assert cmp is not None
    t = cmp.table
    pairs = t.pivot_table(index=["shots", "repeat"], columns="space", values="n_test", aggfunc="first")
    assert len(pairs) == 4 and (pairs["frozen"] == pairs["finetune"]).all()
    # fine-tuning saw exactly each draw's training images, never its held-out ones
    ft = t[t.space == "finetune"].sort_values(["shots", "repeat"])
    assert sorted(n for n, _ in seen) == sorted(ft.n_train.tolist())
    assert (ft.n_train + ft.n_test == 16).all()
    assert set(cmp.gain.shots) == {"2", "4"} and cmp.gain.pairs.eq(2).all()
    assert cmp.verdict.startswith(("fine-tuning beats frozen features from k = ", "no gain at any k measured"))
    assert (res.out / "strategies.png").is_file() and (res.out / "strategies.csv").is_file()
    html = res.report_html.read_text()
    assert "Frozen features vs fine-tuning" in html and cmp.verdict.split(" (")[0] in html
    assert "strategies" in res.to_dict() and res.timings["finetune"] > 0
    # a rerun finds every draw's result and trains nothing
    seen.clear()
    again = run_experiment(
        tmp_path / "data", tmp_path / "out", shots="2,4", repeats=2, baselines=(),
        strategies="frozen,finetune", finetune_options={"epochs": 1, "val_fraction": 0.0},
        featurizer_options={"device": "cpu"},
    )
    assert seen == []
    np.testing.assert_allclose(again.strategies.table.accuracy, cmp.table.accuracy)
