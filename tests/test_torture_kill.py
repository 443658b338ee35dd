"""Torture suite, interruptions: SIGKILL a featurize run at many moments, then resume.

A child process featurizes into a cache that already holds some rows, with checkpoints
forced every two batches, and kills itself with SIGKILL at a named point
(``DEEPFEAT_TEST_KILL_AT``, see :mod:`deepfeat.faults`): while opening, between
forward pass and write, in the middle of a journal record, after its fsync, and at every
step of a checkpoint. After each kill the cache must read cleanly (only whole rows, all
equal to a clean run's), lose no row that was durably written, and a resumed run must
complete with features equal to a clean run, no duplicate keys and no missing rows.

The default suite runs a sample of points; ``pytest -m slow`` (``make test-all``) runs the
full sweep, timed kills at random moments, and a chain of kills.
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import TEST_RESNET
from PIL import Image

from deepfeat.faults import ENV_VAR, KILL_POINTS
from deepfeat.featurize import FeatureCache, Featurizer
from deepfeat.store import verify_cache
from deepfeat.store.journal import encode_record

KW = TEST_RESNET  # a tiny random-weights CNN: the kills, not the maths, are tested
pytestmark = pytest.mark.usefixtures("one_torch_thread")
N_IMAGES = 24
N_PRESENT = 6  # rows in the cache before the killed run starts
BATCH = KW["batch_size"]
N_BATCHES = (N_IMAGES - N_PRESENT) // BATCH  # 6 batches of 3 in the killed run

CHILD = textwrap.dedent(
    """
    import sys
    from deepfeat.store import FeatureCache
    FeatureCache.checkpoint_bytes = int(sys.argv[3])
    from deepfeat.featurize import Featurizer
    paths = open(sys.argv[2], encoding="utf-8").read().split("\\n")
    Featurizer(cache=sys.argv[1], **{kw!r}).featurize(paths, return_features=False)
    """
).format(kw=KW)

# point:n -> rows the cache must hold after the kill (None: not pinned down exactly)
SPECS: dict[str, int | None] = {
    # opening
    "writer.locked:1": N_PRESENT,
    "featurize.hashed:1": N_PRESENT,
    "journal.opened:1": N_PRESENT,
    # mid-batch: forward pass done, nothing written yet
    "featurize.forwarded:1": N_PRESENT,
    "featurize.forwarded:3": N_PRESENT + 2 * BATCH,
    "featurize.forwarded:6": N_PRESENT + 5 * BATCH,
    # mid-write: a torn journal record, or right after a record's fsync
    "journal.torn:1": N_PRESENT,
    "journal.torn:2": N_PRESENT + BATCH,
    "journal.torn:4": N_PRESENT + 3 * BATCH,
    "journal.torn:6": N_PRESENT + 5 * BATCH,
    "journal.appended:1": N_PRESENT + BATCH,
    "journal.appended:2": N_PRESENT + 2 * BATCH,
    "journal.appended:5": N_PRESENT + 5 * BATCH,
    # checkpoints (after batches 2, 4 and 6) and the final close
    "checkpoint.begin:1": N_PRESENT + 2 * BATCH,
    "checkpoint.copied:1": N_PRESENT + 2 * BATCH,
    "checkpoint.resized:1": N_PRESENT + 2 * BATCH,
    "checkpoint.merged:1": N_PRESENT + 2 * BATCH,
    "checkpoint.written:1": N_PRESENT + 2 * BATCH,
    "checkpoint.segment:1": N_PRESENT + 2 * BATCH,
    "checkpoint.linked:1": N_PRESENT + 2 * BATCH,  # the one-file cache becomes segment 1
    "checkpoint.replaced:1": N_PRESENT + 2 * BATCH,
    "checkpoint.done:1": N_PRESENT + 2 * BATCH,
    "checkpoint.copied:2": N_PRESENT + 4 * BATCH,
    "checkpoint.resized:3": N_PRESENT + 4 * BATCH,
    "checkpoint.merged:6": N_PRESENT + 6 * BATCH,
    "checkpoint.written:3": N_PRESENT + 6 * BATCH,
    "checkpoint.segment:3": N_PRESENT + 6 * BATCH,
    "checkpoint.replaced:3": N_PRESENT + 6 * BATCH,
    "checkpoint.done:3": N_PRESENT + 6 * BATCH,
}
SAMPLE = [
    "featurize.forwarded:3",
    "journal.torn:2",
    "checkpoint.copied:1",
    "checkpoint.resized:1",
    "checkpoint.linked:1",
    "checkpoint.replaced:1",
]


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(
        Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize((64, 48))
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Images, a listing, a clean run's features, and a cache already holding N_PRESENT rows."""
    d = tmp_path_factory.mktemp("kill")
    paths = []
    for i in range(N_IMAGES):
        p = d / f"img {i:02d}.png"
        Image.fromarray(_image(i)).save(p)
        paths.append(str(p))
    listing = d / "list.txt"
    listing.write_text("\n".join(paths), encoding="utf-8")
    clean = Featurizer(**KW).featurize(paths)
    assert clean.ok.all()
    base = d / "base.h5"
    Featurizer(cache=base, **KW).featurize(paths[:N_PRESENT])
    f = Featurizer(**KW)
    fp = f.fingerprint
    record = encode_record(fp, f.encoder.space_attrs(), clean.keys[:BATCH], clean.features[:BATCH])
    checkpoint_bytes = len(record) * 3 // 2  # a checkpoint after every second batch
    return {
        "checkpoint_bytes": checkpoint_bytes,
        "paths": paths,
        "listing": listing,
        "clean": clean.features,
        "keys": clean.keys,
        "base": base,
        "fp": fp,
    }


def _start(cache: Path, world, spec: str | None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop(ENV_VAR, None)
    env["OMP_NUM_THREADS"] = "1"  # one thread is several times faster on a busy machine
    if spec:
        env[ENV_VAR] = spec
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(cache),
            str(world["listing"]),
            str(world["checkpoint_bytes"]),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _run_killed_at(cache: Path, world, spec: str) -> None:
    child = _start(cache, world, spec)
    out, _ = child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL, (
        f"kill point {spec} was never reached:\n{out[-3000:]}"
    )


def _check_after_kill(cache: Path, world) -> dict[str, np.ndarray]:
    """The killed run's cache: verifies, reads whole rows equal to the clean run; returns them."""
    report = verify_cache(cache)
    assert report["ok"], report["problems"]
    feats, found = FeatureCache(cache).read(world["fp"], world["keys"])
    np.testing.assert_allclose(feats[found], world["clean"][found], rtol=1e-5, atol=1e-6)
    return {k: feats[i] for i, k in enumerate(world["keys"]) if found[i]}


def _check_resumed(cache: Path, world, before: dict[str, np.ndarray]) -> int:
    """Resume; return the number of rows lost (must be 0) after asserting a clean final state."""
    f = Featurizer(cache=cache, lock_timeout=0, **KW)
    res = f.featurize(world["paths"])
    assert res.ok.all()
    assert res.summary["cached"] == len(before), "rows present after the kill were recomputed"
    assert res.summary["featurized"] == N_IMAGES - len(before)
    np.testing.assert_allclose(res.features, world["clean"], rtol=1e-5, atol=1e-6)
    with h5py.File(cache, "r") as h:
        g = h["spaces"][world["fp"]]
        keys = [k.decode() for k in g["keys"][...]]
        rows = g["features"][...]
    assert len(keys) == len(set(keys)), "duplicate keys"
    assert set(keys) == set(world["keys"]), "missing or foreign rows"
    order = [keys.index(k) for k in world["keys"]]
    np.testing.assert_allclose(rows[order], world["clean"], rtol=1e-5, atol=1e-6)
    lost = [k for k, v in before.items() if not np.array_equal(rows[keys.index(k)], v)]
    journal = Path(str(cache) + ".journal")
    assert not journal.exists() or journal.stat().st_size == 0
    assert not glob.glob(glob.escape(str(cache)) + ".tmp-*"), (
        "temporary checkpoint file left behind"
    )
    report = verify_cache(cache)
    assert report["ok"], report["problems"]
    assert not [w for w in report["warnings"] if "no manifest lists" in w], report["warnings"]
    segdir = Path(str(cache) + ".d")
    assert not segdir.exists() or not list(segdir.glob("*.tmp-*")), "temporary segment left behind"
    return len(lost)


def _sweep_one(spec: str, world, tmp_path: Path) -> None:
    cache = tmp_path / "c.h5"
    shutil.copy(world["base"], cache)
    _run_killed_at(cache, world, spec)
    before = _check_after_kill(cache, world)
    want = SPECS[spec]
    if want is not None:
        assert len(before) == want, f"{spec}: {len(before)} rows after the kill, expected {want}"
    assert _check_resumed(cache, world, before) == 0


def test_every_kill_point_is_swept():
    points = {s.split(":")[0] for s in SPECS}
    assert points == set(KILL_POINTS), f"not swept: {set(KILL_POINTS) - points}"
    assert len(SPECS) >= 20 and set(SAMPLE) <= set(SPECS)


@pytest.mark.parametrize("spec", SAMPLE)
def test_kill_sample_then_resume(spec, world, tmp_path):
    _sweep_one(spec, world, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("spec", [s for s in SPECS if s not in SAMPLE])
def test_kill_sweep_then_resume(spec, world, tmp_path):
    _sweep_one(spec, world, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_kill_at_a_random_moment_then_resume(seed, world, tmp_path):
    """SIGKILL from outside at a random moment (also inside HDF5 and torch calls)."""
    cache = tmp_path / "c.h5"
    shutil.copy(world["base"], cache)
    journal = Path(str(cache) + ".journal")
    child = _start(cache, world, None)
    delay = random.Random(seed).uniform(0.0, 1.5)
    try:
        deadline = time.monotonic() + 240
        while not journal.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)  # the run has started writing
        time.sleep(delay)
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(60)
    before = _check_after_kill(cache, world)
    assert len(before) >= N_PRESENT
    assert _check_resumed(cache, world, before) == 0


@pytest.mark.slow
def test_a_chain_of_kills_then_resume(world, tmp_path):
    cache = tmp_path / "c.h5"
    shutil.copy(world["base"], cache)
    seen = 0
    for spec in (
        "journal.torn:2",
        "checkpoint.resized:1",
        "journal.appended:3",
        "checkpoint.replaced:1",
    ):
        _run_killed_at(cache, world, spec)
        before = _check_after_kill(cache, world)
        assert len(before) >= seen, f"{spec}: rows went missing ({seen} -> {len(before)})"
        seen = len(before)
    assert seen < N_IMAGES
    assert _check_resumed(cache, world, before) == 0
