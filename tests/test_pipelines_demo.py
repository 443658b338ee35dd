"""The demo's data export and (slow) the whole demo end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfeat.cli.main import main
from deepfeat.featurize.inputs import load_labeled
from deepfeat.pipelines.demo_data import export_digits, export_lfw_subset


def test_lfw_subset_export_is_a_class_folder(tmp_path):
    folder = export_lfw_subset(tmp_path)
    ds = load_labeled(folder)
    assert ds.classes == ["face", "not_face"]
    assert [ds.labels.count(c) for c in ds.classes] == [100, 100]
    img = np.asarray(Image.open(ds.paths[0]))
    assert img.shape == (25, 25) and img.dtype == np.uint8 and img.max() > 100
    first = Path(ds.paths[0])
    mtime = first.stat().st_mtime_ns
    assert export_lfw_subset(tmp_path) == folder  # idempotent: nothing rewritten
    assert first.stat().st_mtime_ns == mtime


def test_digits_export_is_faithful_and_fixed(tmp_path):
    from sklearn.datasets import load_digits

    folder = export_digits(tmp_path, per_class=3)
    ds = load_labeled(folder)
    assert ds.classes == [str(d) for d in range(10)]
    assert [ds.labels.count(c) for c in ds.classes] == [3] * 10
    img = np.asarray(Image.open(ds.paths[0]))
    assert img.shape == (32, 32)
    small = img[::4, ::4].astype(float)  # undo the x4 nearest-neighbour enlargement
    ink = (255 - small) * 16 / 255
    digits = load_digits()
    match = np.abs(digits.images - ink).max(axis=(1, 2)) < 0.5
    assert match.any() and digits.target[match][0] == int(ds.labels[0])
    again = export_digits(tmp_path / "again", per_class=3)
    assert sorted(p.name for p in again.rglob("*.png")) == sorted(
        p.name for p in folder.rglob("*.png")
    )
    with pytest.raises(FileExistsError, match="different digits export"):
        export_digits(tmp_path, per_class=4)


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    code = main(
        [
            "demo",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "reports"),
            "--json",
            "-q",
        ]
    )
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert (tmp_path / "reports" / "index.html").is_file()
    digits = res["experiments"]["digits"]
    assert digits["accuracy"]["pixels16"]["10"]["mean"] > 0.7
    lfw = res["experiments"]["lfw_subset"]
    ref = lfw["reference_shots"]
    assert lfw["accuracy"]["efficientnet_lite0"][ref]["mean"] > 0.85
