"""Torture suite, concurrency: two writers at once, and readers while a writer appends.

One writer at a time holds ``<cache>.lock``: a second writer waits (``lock_timeout``) and
then finds the rows the first one wrote, or fails with a message naming the holder. The
``.h5`` file only ever changes by an atomic rename and readers read the journal before the
``.h5`` file, so a reader looping while a writer runs sees no error, only whole rows, and
never loses a row it saw before.
"""

from __future__ import annotations

import json
import os
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

from deepfeat.cli.main import main
from deepfeat.featurize import FeatureCache, Featurizer
from deepfeat.store import verify_cache

KW = TEST_RESNET
pytestmark = pytest.mark.usefixtures("one_torch_thread")
N = 24

WRITER = textwrap.dedent(
    """
    import json, sys
    from deepfeat.store import FeatureCache
    FeatureCache.checkpoint_bytes = 4000  # a checkpoint (atomic rename) every few batches
    from deepfeat.featurize import Featurizer
    cache, listing, chunk, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    paths = open(listing, encoding="utf-8").read().split("\\n")
    done = 0
    for s in range(0, len(paths), chunk):  # several runs: every run ends with a checkpoint
        f = Featurizer(cache=cache, lock_timeout=timeout, **{kw!r})
        done += f.featurize(paths[s : s + chunk], return_features=False).summary["featurized"]
    print(json.dumps({{"featurized": done}}))
    """
).format(kw=KW)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("conc")
    paths = []
    for i in range(N):
        rng = np.random.default_rng(300 + i)
        p = d / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize((64, 48)).save(p)
        paths.append(str(p))
    clean = Featurizer(**KW).featurize(paths)
    return {"dir": d, "paths": paths, "clean": clean, "fp": Featurizer(**KW).fingerprint}


def _listing(tmp: Path, name: str, paths: list[str]) -> Path:
    p = tmp / name
    p.write_text("\n".join(paths), encoding="utf-8")
    return p


def _writer(cache: Path, listing: Path, chunk: int, timeout: float = 120) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(cache), str(listing), str(chunk), str(timeout)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _check_final(cache: Path, world) -> None:
    report = verify_cache(cache)
    assert report["ok"], report["problems"]
    with h5py.File(cache, "r") as f:
        g = f["spaces"][world["fp"]]
        keys = [k.decode() for k in g["keys"][...]]
        rows = g["features"][...]
    assert len(keys) == len(set(keys)) == N, "duplicate or missing rows"
    order = [keys.index(k) for k in world["clean"].keys]
    np.testing.assert_allclose(rows[order], world["clean"].features, rtol=1e-5, atol=1e-6)


def test_two_writers_at_once_both_complete_and_compute_each_image_once(world, tmp_path):
    cache = tmp_path / "c.h5"
    a = _writer(cache, _listing(tmp_path, "a.txt", world["paths"][:16]), chunk=16)
    b = _writer(cache, _listing(tmp_path, "b.txt", world["paths"][8:]), chunk=16)
    outs = []
    for p in (a, b):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    # the overlap (8 images) was computed by whichever writer came first, never twice
    assert sum(o["featurized"] for o in outs) == N, outs
    _check_final(cache, world)


def test_second_writer_without_waiting_fails_clearly(world, tmp_path, capsys):
    cache = tmp_path / "c.h5"
    Featurizer(cache=cache, **KW).featurize(world["paths"][:6])
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
            import sys, time
            from deepfeat.store import FeatureCache
            with FeatureCache(sys.argv[1]).writer():
                print("holding", flush=True)
                time.sleep(60)
            """
            ),
            str(cache),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        t0 = time.monotonic()
        code = main(
            [
                "featurize",
                str(world["dir"]),
                "--cache",
                str(cache),
                "--backbone",
                "timm:test_resnet",
                "--weights",
                "none",
                "--device",
                "cpu",
                "--workers",
                "0",
                "--lock-timeout",
                "1",
                "-q",
                "--json",
            ]
        )
        waited = time.monotonic() - t0
        captured = capsys.readouterr()
        assert code == 1 and waited >= 0.9
        err = json.loads(captured.out)
        assert err["error_type"] == "CacheLockedError"
        assert (
            f"another process (pid {holder.pid}) is writing" in err["error"]
            and "waited 1 s" in err["error"]
        )
        assert "Traceback" not in captured.err
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed while holding the lock: the kernel released it, nothing is damaged
    assert verify_cache(cache)["ok"]
    res = Featurizer(cache=cache, lock_timeout=0, **KW).featurize(world["paths"])
    assert res.summary["cached"] == 6 and res.summary["featurized"] == N - 6
    _check_final(cache, world)


def test_readers_see_only_whole_rows_while_a_writer_appends(world, tmp_path):
    cache = tmp_path / "c.h5"
    clean = dict(zip(world["clean"].keys, world["clean"].features))
    keys = list(clean)
    writer = _writer(cache, _listing(tmp_path, "w.txt", world["paths"]), chunk=3)
    reads, seen, errors, plain_reads = 0, 0, [], 0
    try:
        while writer.poll() is None:
            try:
                got, found = FeatureCache(cache).read(world["fp"], keys)
            except Exception as exc:  # noqa: BLE001 - any error is a failure of the design
                errors.append(repr(exc))
                continue
            reads += 1
            for k, row, ok in zip(keys, got, found):
                if ok:
                    np.testing.assert_allclose(row, clean[k], rtol=1e-5, atol=1e-6)
            assert found.sum() >= seen, f"a row seen before disappeared ({seen} -> {found.sum()})"
            seen = int(found.sum())
            if os.path.exists(cache):  # a plain-h5py reader of the .h5 file alone
                with h5py.File(cache, "r") as f:
                    g = f["spaces"].get(world["fp"])
                    if g is not None:
                        k, x = g["keys"][...], g["features"][...]
                        assert len(k) == len(x)
                        for kk, row in zip(k, x):
                            np.testing.assert_allclose(
                                row, clean[kk.decode()], rtol=1e-5, atol=1e-6
                            )
                        plain_reads += 1
    finally:
        out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err[-3000:]
    assert not errors, errors[:3]
    assert reads >= 5 and plain_reads >= 1, (reads, plain_reads)
    assert json.loads(out.strip().splitlines()[-1])["featurized"] == N
    _check_final(cache, world)
