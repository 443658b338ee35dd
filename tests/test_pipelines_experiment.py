"""run_experiment and ``deepfeat experiment`` end to end on a small folder of real photos.

The folder is built to contain what an audit must find: a training image copied into the
test set (a leak), an empty ``.jpg`` (a failed decode) and a stray text file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import sample_photo
from PIL import Image

from deepfeat.cli.main import main
from deepfeat.pipelines import run_experiment

CLASSES = {"cat": "chelsea", "coffee": "coffee", "rocket": "rocket"}
FAST = {"shots": "1,2,all", "repeats": 2, "baselines": ("pixels",), "targets": (0.9,)}


def _crops(photo: np.ndarray, n: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    h, w = photo.shape[:2]
    out = []
    for _ in range(n):
        ch, cw = int(h * 0.6), int(w * 0.6)
        y, x = int(rng.integers(0, h - ch)), int(rng.integers(0, w - cw))
        out.append(Image.fromarray(photo[y : y + ch, x : x + cw]).resize((96, 72)))
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exp")
    train, test = root / "train", root / "test"
    for i, (cls, photo) in enumerate(CLASSES.items()):
        crops = _crops(sample_photo(photo), 8, seed=i)
        for side, part in ((train, crops[:5]), (test, crops[5:])):
            (side / cls).mkdir(parents=True)
            for j, img in enumerate(part):
                img.save(side / cls / f"{cls}{j}.jpg", quality=92)
    shutil.copy(train / "cat" / "cat0.jpg", test / "cat" / "leaked_copy.jpg")
    (train / "coffee" / "broken.jpg").write_bytes(b"")
    (train / "rocket" / "notes.txt").write_text("not an image\n")
    return {"train": train, "test": test, "root": root}


@pytest.fixture(scope="module")
def first_run(folders):
    cache = folders["root"] / "features.h5"
    return run_experiment(
        folders["train"], folders["root"] / "report", test_src=folders["test"], cache=cache, **FAST
    )


def test_report_and_tables_are_written(first_run):
    out = first_run.out
    for name in (
        "report.html",
        "results.csv",
        "summary.csv",
        "gains.csv",
        "audit_pairs.csv",
        "experiment.json",
        "learning_curves.png",
        "confusion.png",
        "reliability.png",
        "duplicates.png",
    ):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    best = first_run.best
    errors = (best["y_pred"] != first_run.labels[best["test"]]).any()
    assert (out / "misclassified.png").is_file() == errors
    assert ("No held-out image was misclassified" in html) != errors
    assert html.index("Data audit") < html.index("Learning curves")  # the audit comes first
    assert "data:image/png;base64," in html  # self-contained
    table = pd.read_csv(out / "results.csv")
    assert set(table.space) == {"efficientnet_lite0", "pixels32"}
    assert {"shots", "repeat", "seed", "accuracy", "role", "backbone", "layer"} <= set(
        table.columns
    )
    assert json.loads((out / "experiment.json").read_text())["config"]["shots"] == ["1", "2", "all"]
    # probabilities: held-out log-loss and calibration error per draw, and in the report
    assert ((table.ece >= 0) & (table.ece <= 1)).all() and (table.log_loss > 0).all()
    cal = first_run.to_dict()["calibration"]
    assert cal["space"] == best["space"] and 0 <= cal["ece"] <= 1
    assert "Probabilities" in html and "expected calibration error" in html


def test_audit_finds_the_leak_the_broken_file_and_the_stray(first_run):
    c = first_run.audit.counts()
    assert c["exact_leaks"] == 1
    assert c["failed_decodes"] == 1 and c["skipped_files"] == 1
    pair = first_run.audit.pairs.iloc[0]
    assert {Path(pair.path_i).name, Path(pair.path_j).name} == {"cat0.jpg", "leaked_copy.jpg"}
    assert "Leakage" in (first_run.out / "report.html").read_text()
    assert first_run.data["test"] == 10  # leak kept without --drop-leaked


def test_photos_transfer_and_the_verdict_is_reported(first_run):
    s = first_run.summary
    top = s[s.shots == "all"].set_index("space")["mean"]
    assert top["efficientnet_lite0"] >= 0.9  # three very different photos
    assert len(first_run.verdicts) == 1 and "raw pixels" in first_run.verdicts[0]


def test_rerun_hits_the_cache_drops_the_leak_and_repeats_the_numbers(folders, first_run):
    again = run_experiment(
        folders["train"],
        folders["root"] / "report2",
        test_src=folders["test"],
        cache=folders["root"] / "features.h5",
        drop_leaked=True,
        **FAST,
    )
    feat = again.featurization["efficientnet_lite0"]
    assert feat["featurized"] == 0 and feat["forward_passes"] == 0
    assert feat["cached"] == first_run.featurization["efficientnet_lite0"]["featurized"]
    leaked = first_run.audit.leaked_test()  # the copy, and any near-duplicate crop
    copy = first_run.paths.index(str(folders["test"] / "cat" / "leaked_copy.jpg"))
    assert copy in leaked
    assert again.data["test"] == 10 - len(leaked)
    assert any("drop-leaked" in n for n in again.notes)
    assert "were dropped before training" in " ".join(again.audit.warnings())
    assert "optimistic unless" in " ".join(first_run.audit.warnings())
    # Same seeds, same training draws: the training side of both runs is identical.
    cols = ["space", "shots", "repeat", "seed", "n_train", "best_params"]
    pd.testing.assert_frame_equal(first_run.table[cols], again.table[cols])


def test_cli_experiment_json(folders, first_run, capsys):
    out = folders["root"] / "cli"
    code = main(
        [
            "experiment",
            str(folders["train"]),
            "--out",
            str(out),
            "--test-src",
            str(folders["test"]),
            "--cache",
            str(folders["root"] / "features.h5"),
            "--shots",
            "1,2",
            "--repeats",
            "2",
            "--baselines",
            "pixels",
            "--json",
            "-q",
        ]
    )
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert Path(res["report"]).is_file()
    assert res["cache"]["efficientnet_lite0"]["featurized"] == 0
    assert set(res["accuracy"]) == {"efficientnet_lite0", "pixels32"}
    assert res["reference_shots"] == "2"  # the largest k with several draws


def test_cli_refuses_impossible_shots(folders, capsys):
    code = main(
        [
            "experiment",
            str(folders["train"]),
            "--out",
            str(folders["root"] / "bad"),
            "--cache",
            str(folders["root"] / "features.h5"),
            "--shots",
            "50",
            "--baselines",
            "none",
        ]
    )
    assert code == 1
    assert "no shot value is possible" in capsys.readouterr().err


def test_the_auto_curve_is_its_own_curve(folders, first_run, monkeypatch):
    """--select auto: a curve of its own role, drawn and tabled with the learning curves,
    and the space "how many labels" is answered for (first_run warmed the cache)."""
    from deepfeat.pipelines import plots
    from deepfeat.pipelines.experiment_spaces import AUTO

    drawn = {}
    real = plots.plot_learning_curves

    def spy(summary, labels, path, **kw):
        drawn.update(labels=dict(labels), fit=kw.get("extrapolation"))
        return real(summary, labels, path, **kw)

    monkeypatch.setattr(plots, "plot_learning_curves", spy)
    res = run_experiment(
        folders["train"], folders["root"] / "auto", test_src=folders["test"],
        cache=folders["root"] / "features.h5", shots="1,2,all", repeats=1, baselines=(),
        targets=(0.9,), select="auto",
    )
    summary = pd.read_csv(res.out / "summary.csv")
    assert dict(summary.drop_duplicates("space")[["space", "role"]].values)["auto"] == AUTO
    assert "auto" in drawn["labels"]  # a line of the learning-curve figure
    html = (res.out / "report.html").read_text()
    curves = html[html.index("<h2>Learning curves</h2>"):html.index("<h2>Transfer gain")
                  if "<h2>Transfer gain" in html else html.index("<h2>How many labels")]
    assert f"({AUTO})</td>" in curves  # a row of its table
    assert res.labels_space == "auto"
    doc = json.loads((res.out / "experiment.json").read_text())
    assert doc["labels_space"] == "auto" and "auto" in doc["accuracy"]
    if "auto" in res.extrapolations:
        assert (drawn["fit"] is None) == bool(res.extrapolations["auto"].refused)
