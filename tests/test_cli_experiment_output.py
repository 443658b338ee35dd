"""What ``deepfeat experiment`` says: verdicts need an interval, a failed power-law fit
does not cost the report, and ``--json`` carries the paired gains as numbers.

Data: three classes of six crops of scikit-image photos, one shared feature cache.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import sample_photo
from PIL import Image

from deepfeat.cli.main import main
from deepfeat.pipelines.summary import NO_VERDICT, paired_gain, transfer_verdict

# (the package re-exports a function of the same name, so reach the module itself)
extrapolate_module = importlib.import_module("deepfeat.pipelines.extrapolate")
CLASSES = {"cat": "chelsea", "coffee": "coffee", "rocket": "rocket"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("expout")
    src = root / "train"
    rng = np.random.default_rng(0)
    for cls, name in CLASSES.items():
        (src / cls).mkdir(parents=True)
        photo = sample_photo(name)
        h, w = photo.shape[:2]
        for j in range(6):
            y, x = int(rng.integers(0, h // 3)), int(rng.integers(0, w // 3))
            crop = photo[y : y + 2 * h // 3, x : x + 2 * w // 3]
            Image.fromarray(crop).resize((96, 72)).save(src / cls / f"{j}.jpg", quality=92)
    return {"src": src, "root": root, "cache": root / "features.h5"}


def _experiment(data, out: str, *extra: str) -> list[str]:
    return [
        "experiment",
        str(data["src"]),
        "--out",
        str(data["root"] / out),
        "--cache",
        str(data["cache"]),
        "--baselines",
        "pixels",
        "--targets",
        "0.9",
        "-q",
        *extra,
    ]


# ---------------------------------------------------------------- item 8: no verdict from one draw
def test_a_single_negative_draw_gets_no_verdict():
    one = pd.DataFrame(
        {
            "space": ["cnn", "pix"] * 2,
            "shots": ["1", "1", "5", "5"],
            "k": [1.0, 1.0, 5.0, 5.0],
            "repeat": [0] * 4,
            "accuracy": [0.5, 0.6, 0.7, 0.8],
        }
    )
    text = transfer_verdict(paired_gain(one, "cnn", "pix"), "cnn", "pixels")
    assert text.startswith(NO_VERDICT) and "NEGATIVE" not in text and "-10.0" in text
    # Control: the same differences over three draws with an interval below zero are judged.
    three = pd.concat([one.assign(repeat=r, accuracy=one.accuracy + d) for r, d in
                       enumerate((0.0, 0.01, -0.01))])
    text3 = transfer_verdict(paired_gain(three, "cnn", "pix"), "cnn", "pixels")
    assert text3.startswith("NEGATIVE TRANSFER")


def test_cli_with_one_repeat_says_no_interval_no_verdict(data, capsys):
    code = main([*_experiment(data, "one", "--shots", "1,3", "--repeats", "1")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert NO_VERDICT in out and "NEGATIVE" not in out and "beats" not in out
    html = (data["root"] / "one" / "report.html").read_text()
    assert NO_VERDICT in html and "NEGATIVE" not in html


# ------------------------------------------------ item 9: a failed power-law fit keeps the report
def test_a_power_law_fit_that_does_not_converge_leaves_the_report(data, capsys, monkeypatch):
    def no_convergence(*args, **kwargs):
        raise RuntimeError(
            "Optimal parameters not found: The maximum number of function evaluations is exceeded."
        )

    monkeypatch.setattr(extrapolate_module, "curve_fit", no_convergence)
    code = main([*_experiment(data, "nofit", "--shots", "1,2,3", "--repeats", "2", "--json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    r = json.loads(out)
    assert r["extrapolation"] == {}
    why = r["extrapolation_failures"]
    assert set(why) == {"efficientnet_lite0", "pixels32"}
    assert all("maximum number of function evaluations" in v for v in why.values())
    html = (data["root"] / "nofit" / "report.html").read_text()
    assert "Not fitted for" in html and "maximum number of function evaluations" in html
    assert "at least three distinct k values" not in html  # the true reason, not a guess
    assert (data["root"] / "nofit" / "learning_curves.png").is_file()


# ---------------------------------------------------------- item 10: structured gains in --json
def test_json_gains_are_the_numbers_of_gains_csv(data, capsys):
    code = main([*_experiment(data, "gains", "--shots", "1,2,4", "--repeats", "3", "--json")])
    r = json.loads(capsys.readouterr().out)
    assert code == 0
    # (also the control of the failed-fit test: unpatched, the same curve is extrapolated)
    assert r["extrapolation_failures"] == {} and "efficientnet_lite0" in r["extrapolation"]
    csv = pd.read_csv(data["root"] / "gains" / "gains.csv", dtype={"shots": str})
    assert set(r["gains"]) == set(csv.baseline) == {"pixels32"}
    rows = 0
    for row in csv.itertuples():
        g = r["gains"][row.baseline][row.shots]
        assert g["draws"] == row.pairs and g["k"] == pytest.approx(row.k)
        assert g["mean"] == pytest.approx(row.gain)
        for key in ("ci_low", "ci_high"):
            value = getattr(row, key)
            assert (g[key] is None) == bool(np.isnan(value))
            if g[key] is not None:
                assert g[key] == pytest.approx(value)
        rows += 1
    assert rows == 3 and r["gains"]["pixels32"]["1"]["draws"] == 3
    # the gains are differences of the accuracies reported beside them
    acc = r["accuracy"]
    assert r["gains"]["pixels32"]["2"]["mean"] == pytest.approx(
        acc["efficientnet_lite0"]["2"]["mean"] - acc["pixels32"]["2"]["mean"]
    )
