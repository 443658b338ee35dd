"""A small experiment on real flower photos: pretrained features must beat the baselines."""

from __future__ import annotations

import pytest
from conftest import shared_dataset

from deepfeat.pipelines import run_experiment


@pytest.mark.datasets
def test_oxford17_subset_shows_positive_transfer(tmp_path):
    src = shared_dataset("oxford17")
    res = run_experiment(
        src,
        tmp_path / "report",
        cache=tmp_path / "f.h5",
        max_per_class=12,
        test_size=6,
        shots="1,3,6",
        # three draws: with two, the t-interval (t = 12.7 at one degree of freedom) makes
        # the lower bound swing with package versions' tiny changes to the draws' scores
        repeats=3,
        baselines=("pixels",),
        targets=(0.8,),
    )
    assert res.data["classes"] == 17 and res.data["test"] == 17 * 6
    assert any("subsampled" in n for n in res.notes)  # the report says it subsampled
    gain = res.gains["pixels32"]
    assert (gain[gain.shots == "3"].ci_low > 0.2).all()  # a large, clear gain
    assert res.verdicts[0].startswith("efficientnet_lite0 beats the raw pixels")
    assert (res.out / "report.html").is_file()
