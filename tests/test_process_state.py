"""deepfeat leaves its caller's process as it found it, on any number of threads.

The autouse guard in conftest.py checks every test; these tests drive the places that
touch process-wide state hard enough to show a race, and check that the guard itself sees
the race it exists for (a negative control).
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import state_guard
import torch
from PIL import Image

from deepfeat.featurize.decode import _decode_jpeg_tensor, decode_pixels
from deepfeat.process_state import ignoring_warnings, quieter_logs, torch_single_threaded


def _jpegs(photo_dir: Path) -> list[bytes]:
    out = []
    for p in sorted(photo_dir.iterdir()):
        buf = io.BytesIO()
        Image.open(p).convert("RGB").save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def test_decoding_on_eight_threads_leaves_warnings_filters_alone(photo_dir):
    """The issue's reproduction: 400 JPEG decodes on 8 threads, then a plain warning."""
    data = _jpegs(photo_dir) * 40
    before = list(warnings.filters)
    with ThreadPoolExecutor(8) as ex:
        decoded = list(ex.map(_decode_jpeg_tensor, data))
    assert all(t is not None for t in decoded)  # the fast path did run
    assert warnings.filters == before
    with pytest.warns(UserWarning, match="still a warning"):
        warnings.warn("still a warning", UserWarning, stacklevel=2)


def test_fast_decoder_gives_pillows_pixels_for_corrupt_but_complete_scan(photo_dir):
    """The fast path decides per file, not through warnings: a scan cut short and closed with
    an end-of-image marker decodes to Pillow's pixels; a file cut short goes to Pillow."""
    jpeg = _jpegs(photo_dir)[0]
    damaged = jpeg[: len(jpeg) // 2] + b"\xff\xd9"
    fast = _decode_jpeg_tensor(damaged)
    assert fast is not None
    pil = np.asarray(Image.open(io.BytesIO(damaged)).convert("RGB"))
    assert np.array_equal(fast.permute(1, 2, 0).numpy(), pil)
    assert _decode_jpeg_tensor(jpeg[: len(jpeg) // 2]) is None  # no marker: Pillow refuses it
    with pytest.raises(Exception, match="truncated"):
        decode_pixels(jpeg[: len(jpeg) // 2])


def test_featurize_through_the_public_api_leaves_filters_and_threads(many_photos, tmp_path, torch_threads):
    from deepfeat.featurize import Featurizer

    before = state_guard.snapshot()
    assert before["torch threads"] == torch_threads
    res = Featurizer("efficientnet_lite0", cache=str(tmp_path / "c.h5"), num_workers=2,
                     batch_size=4).featurize(many_photos)
    assert res.ok.all()
    assert state_guard.changes(before, state_guard.snapshot()) == []


def _interleaved(enter, exit_, n: int = 2, patience: float = 5.0) -> None:
    """Enter in thread order 0..n-1, leave in the same order: the interleaving that makes a
    plain save/restore of process-wide state restore a neighbour's change. A scope that
    serialises its users (a lock) cannot interleave: each wait then gives up after
    ``patience`` seconds and the threads run one after the other."""
    entered = [threading.Event() for _ in range(n)]
    left = [threading.Event() for _ in range(n)]

    def run(i: int) -> None:
        if i:
            entered[i - 1].wait(patience)
        ctx = enter()
        ctx.__enter__()
        entered[i].set()
        entered[-1].wait(patience)
        if i:
            left[i - 1].wait(patience)
        exit_(ctx)
        left[i].set()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


def _leave(ctx) -> None:
    ctx.__exit__(None, None, None)


class _CatchAndError:
    """What the decoder did before: ``catch_warnings`` plus an "error" filter, per thread."""

    def __enter__(self):
        self.ctx = warnings.catch_warnings()
        self.ctx.__enter__()
        warnings.simplefilter("error")
        return self

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


def test_negative_control_guard_sees_catch_warnings_race():
    """Two threads that enter ``warnings.catch_warnings`` one after the other and leave in the
    same order leave the first one's "error" filter behind: the guard reports exactly that."""
    before = state_guard.snapshot()
    with warnings.catch_warnings():  # main thread only: puts the test's filters back
        _interleaved(_CatchAndError, _leave)
        changed = state_guard.changes(before, state_guard.snapshot())
        with pytest.raises(UserWarning):
            warnings.warn("now an exception", UserWarning, stacklevel=2)
    assert any(c.startswith("warnings.filters") for c in changed), changed


def test_ignoring_warnings_survives_the_same_interleaving():
    before = list(warnings.filters)
    # its lock serialises the scopes: the first thread's wait for the second gives up
    _interleaved(lambda: ignoring_warnings(RuntimeWarning), _leave, patience=0.5)
    assert warnings.filters == before


def test_ignoring_warnings_reissues_other_categories_and_nests():
    with pytest.warns(Warning) as shown:
        with ignoring_warnings(RuntimeWarning) as caught:
            with ignoring_warnings(DeprecationWarning):
                warnings.warn("dropped", RuntimeWarning, stacklevel=2)
                warnings.warn("dropped too", DeprecationWarning, stacklevel=2)
                warnings.warn("kept", UserWarning, stacklevel=2)
            warnings.warn("kept too", DeprecationWarning, stacklevel=2)
        with ignoring_warnings(UserWarning, message="only this"):
            warnings.warn("only this one", UserWarning, stacklevel=2)
            warnings.warn("other", UserWarning, stacklevel=2)
    assert sorted(str(w.message) for w in shown) == ["kept", "kept too", "other"]
    assert {str(w.message) for w in caught} == {"dropped", "kept", "kept too"}


def test_torch_thread_count_restored_by_the_last_of_interleaved_users(torch_threads):
    _interleaved(torch_single_threaded, _leave, n=3)
    assert torch.get_num_threads() == torch_threads


def test_quieter_logs_silences_only_the_calling_thread(caplog):
    log = logging.getLogger("deepfeat.classify.search")
    caplog.set_level(logging.INFO, logger="deepfeat")
    other_done = threading.Event()

    def other() -> None:
        log.info("from the other thread")
        other_done.set()

    with quieter_logs("deepfeat.classify"):
        log.info("from the quiet thread")
        threading.Thread(target=other).start()
        assert other_done.wait(5)
    log.info("after the block")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["from the other thread", "after the block"]
    assert log.filters == [] and logging.getLogger("deepfeat.classify").filters == []


def test_cli_main_restores_logging_configuration(photo_dir, tmp_path):
    from deepfeat.cli.main import main

    root = logging.getLogger("deepfeat")
    before = (root.handlers[:], root.level, root.propagate)
    assert main(["featurize", str(photo_dir), "--cache", str(tmp_path / "c.h5"), "-q"]) == 0
    assert (root.handlers[:], root.level, root.propagate) == before
