"""A featurize run killed with SIGKILL leaves a readable cache that the next run completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from deepfeat.featurize import FeatureCache, Featurizer

KW = {"backbone": "torchvision:resnet18", "weights": None, "device": "cpu", "precision": "fp32",
      "batch_size": 2, "num_workers": 0}

CHILD = textwrap.dedent(
    """
    import sys
    from deepfeat.featurize import Featurizer
    paths = open(sys.argv[2]).read().split("\\n")
    Featurizer(cache=sys.argv[1], **{kw!r}).featurize(paths, return_features=False)
    """
)


def _run_and_kill(cache: Path, listing: Path, journal_bytes: int) -> bool:
    """Start a featurize process; SIGKILL it once its journal passes ``journal_bytes``."""
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(kw=KW), str(cache), str(listing)])
    journal = Path(str(cache) + ".journal")
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if journal.exists() and journal.stat().st_size > journal_bytes:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
                return True
            time.sleep(0.005)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return False


def _keys_and_rows(cache: Path, fp: str) -> tuple[list[str], np.ndarray]:
    with h5py.File(cache, "r") as f:
        g = f["spaces"][fp]
        return [k.decode() for k in g["keys"][...]], g["features"][...]


@pytest.fixture(scope="module")
def clean_features(many_photos, tmp_path_factory) -> np.ndarray:
    """The uninterrupted run every resumed one must equal (computed once for the module)."""
    cache = tmp_path_factory.mktemp("clean") / "clean.h5"
    return Featurizer(cache=cache, **KW).featurize([str(p) for p in many_photos]).features


@pytest.mark.parametrize("kill_after_bytes", [0, 6000, 25000])
def test_sigkill_then_resume_equals_a_clean_run(many_photos, clean_features, tmp_path, kill_after_bytes):
    paths = [str(p) for p in many_photos]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(paths))
    cache = tmp_path / "killed.h5"

    killed = _run_and_kill(cache, listing, kill_after_bytes)
    assert killed, "the child finished before it could be killed; make the run longer"
    # the killed run left a readable cache (possibly only a journal): reading works
    reader = Featurizer(cache=cache, **KW)
    n_journal = FeatureCache(cache).spaces().get(reader.fingerprint, {}).get("rows", 0)
    assert 0 < n_journal < len(paths)

    resumed = Featurizer(cache=cache, **KW).featurize(paths)
    assert resumed.summary["featurized"] == len(paths) - n_journal
    assert resumed.summary["cached"] == n_journal
    np.testing.assert_allclose(resumed.features, clean_features, rtol=1e-5, atol=1e-6)

    keys, rows = _keys_and_rows(cache, reader.fingerprint)
    assert len(keys) == len(set(keys)) == len(paths), "duplicate or missing rows"
    assert np.isfinite(rows).all()
    assert not os.path.exists(str(cache) + ".journal"), "the merged-in journal is removed"
