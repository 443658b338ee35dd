"""featurize on a real local Ray cluster (127.0.0.1, 2 CPUs): same rows as the local engine,
resumable, and robust to a killed worker and a killed driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from deepfeat.featurize import FeatureCache, Featurizer
from deepfeat.store import pending_dir, verify_cache

ray = pytest.importorskip("ray")

KW = {
    "backbone": "timm:test_resnet",  # tiny random-weights CNN: the engine, not the maths, is tested
    "weights": None,
    "device": "cpu",
    "precision": "fp32",
    "batch_size": 16,
}


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module (starting one takes seconds; an idle one costs some 4 %
    of a core, so it is not left running for the rest of the session)."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1", _system_config={"worker_niceness": 0})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> list[str]:
    """scikit-image's 200 LFW faces as PNG files, plus one file that is not an image."""
    from skimage.data import lfw_subset

    d = tmp_path_factory.mktemp("faces")
    paths = []
    for i, img in enumerate(lfw_subset()):
        p = d / f"face{i:03d}.png"
        Image.fromarray((img * 255).astype(np.uint8)).resize((48, 48)).save(p)
        paths.append(str(p))
    bad = d / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return paths + [str(bad)]


@pytest.fixture(scope="module")
def local_rows(faces):
    res = Featurizer(**KW).featurize(faces)
    assert res.ok.sum() == len(faces) - 1
    return res


def _stored(cache) -> tuple[list[str], np.ndarray]:
    with h5py.File(cache, "r") as f:
        (g,) = f["spaces"].values()
        return g["keys"][...].astype(str).tolist(), g["features"][...]


def _assert_complete(cache, local_rows) -> None:
    keys, rows = _stored(cache)
    assert len(keys) == len(set(keys)), "a row was written twice"
    want = {k: local_rows.features[i] for i, k in enumerate(local_rows.keys) if local_rows.ok[i]}
    assert set(keys) == set(want), "rows lost or foreign"
    np.testing.assert_allclose(rows, np.stack([want[k] for k in keys]), rtol=1e-4, atol=1e-5)
    assert verify_cache(cache)["ok"]


def test_ray_engine_matches_local_and_a_rerun_computes_nothing(ray_cluster, faces, local_rows, tmp_path):
    cache = tmp_path / "c.h5"
    res = Featurizer(cache=cache, engine="ray", ray_address=ray_cluster, **KW).featurize(faces)
    s = res.summary
    assert (s["featurized"], s["cached"], s["failed"]) == (len(faces) - 1, 0, 1)
    assert res.failures[0]["path"].endswith("broken.png")  # recorded, the job went on
    np.testing.assert_allclose(res.features[res.ok], local_rows.features[local_rows.ok], rtol=1e-4, atol=1e-5)
    _assert_complete(cache, local_rows)
    assert not list(Path(pending_dir(str(cache))).glob("*.journal")), "journals left after the merge"
    for engine in ("ray", "local"):
        f = Featurizer(cache=cache, engine=engine, ray_address=ray_cluster, **KW)
        again = f.featurize(faces)
        assert again.summary["featurized"] == 0 and again.summary["cached"] == len(faces) - 1, engine
        np.testing.assert_allclose(again.features[again.ok], res.features[res.ok])


def _wait_for_rows(cache: Path, timeout: float = 180) -> Path:
    """A pending journal with at least one intact record; returns its path."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for j in Path(pending_dir(str(cache))).glob("*.journal"):
            if j.stat().st_size > 0:
                return j
        time.sleep(0.05)
    raise AssertionError("no Ray actor wrote a row in time")


@pytest.mark.slow
def test_a_killed_ray_worker_loses_no_row_and_writes_none_twice(ray_cluster, faces, local_rows, tmp_path):
    import threading

    cache = tmp_path / "c.h5"
    killed = []

    def killer():
        j = _wait_for_rows(cache)
        pid = int(j.name.split("-")[0])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    res = Featurizer(cache=cache, engine="ray", ray_address=ray_cluster, **KW).featurize(faces)
    t.join(5)
    assert killed, "the worker was not killed during the job"
    assert res.summary["featurized"] == len(faces) - 1 and res.summary["failed"] == 1
    _assert_complete(cache, local_rows)


CHILD = """
import sys
from deepfeat.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_killed_driver_resumes_computing_only_what_is_missing(ray_cluster, faces, local_rows, tmp_path):
    cache = tmp_path / "c.h5"
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(faces), encoding="utf-8")
    argv = ["featurize", str(listing), "--cache", str(cache), "--backbone", KW["backbone"],
            "--weights", "none", "--device", "cpu", "--precision", "fp32", "--batch-size", "16",
            "--engine", "ray", "--address", ray_cluster, "--json"]
    child = subprocess.Popen([sys.executable, "-c", CHILD, *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_rows(cache)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(60)
    # the driver's actors die with it; wait until no one holds their journals
    from deepfeat.store.pending import locked_journals

    journals = sorted(str(p) for p in Path(pending_dir(str(cache))).glob("*.journal"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with locked_journals(journals) as free:
            if len(free) == len(journals):
                break
        time.sleep(0.2)
    from deepfeat.store import read_records

    left = {k for j in journals for r in read_records(j) for k in r.keys}
    assert left, "the killed driver's actors left no rows"
    out = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    res = json.loads(out.stdout)
    assert res["featurized"] == len(faces) - 1 - len(left), "rows the killed run wrote were recomputed"
    assert res["cached"] == len(left) and res["failed"] == 1
    _assert_complete(cache, local_rows)
    assert FeatureCache(cache).spaces()


def test_ray_overhead_benchmark_runs_both_engines_on_distinct_photos(ray_cluster, tmp_path):
    """The `deepfeat bench --parts ray` measurement: both engines featurize every photo, each
    photo its own content (none deduplicated), in alternating rounds."""
    from skimage import data

    from deepfeat.benchmarking.ray_overhead import make_photos, measure_ray_overhead
    from deepfeat.featurize.hashing import hash_bytes

    src = []
    for name in ("astronaut", "chelsea", "coffee"):
        p = tmp_path / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).save(p)
        src.append(str(p))
    photos = make_photos(src, 24, tmp_path / "photos", size=64)
    assert len({hash_bytes(Path(p).read_bytes()) for p in photos}) == 24
    res = measure_ray_overhead(photos, tmp_path / "caches", backbone=KW["backbone"], weights=None,
                               rounds=2, batch_size=8)
    assert [sorted(r) for r in res["rounds"]] == [sorted(res["rounds"][0])] * 2
    assert all(r["local_featurized"] == r["ray_featurized"] == 24 for r in res["rounds"])
    assert res["featurized_equal"] is True
    assert res["ray_seconds"] > 0 and res["local_seconds"] > 0
    assert ray.is_initialized()  # a cluster it did not start is left running


def test_cpu_actors_run_their_calls_side_by_side_where_ray_data_can(ray_cluster):
    """On 2 CPUs one actor runs two single-stream calls at once (no core idles while a call
    drains); a Ray Data without concurrent actor calls gets one call at a time."""
    import types

    from deepfeat.featurize.ray_engine import _actor_pool

    strategy, calls = _actor_pool(ray, 1, 2)
    assert calls == 2 and strategy.max_concurrent_calls_per_actor == 2
    assert strategy.enable_true_multi_threading is True

    class OldStrategy:  # the signature of Ray Data before concurrent actor calls
        def __init__(self, *, size=None, min_size=None, max_size=None):
            self.size = size

    old = types.SimpleNamespace(data=types.SimpleNamespace(ActorPoolStrategy=OldStrategy))
    strategy, calls = _actor_pool(old, 1, 2)
    assert calls == 1 and strategy.size == 1
    assert _actor_pool(ray, 3, 1)[1] == 1
