"""A snapshot of the process-wide state a library call must leave as it found it.

``tests/conftest.py`` takes one before and after every test and fails the test that changed
it (deepfeat runs inside notebooks, servers and batch jobs: one featurize run once left every
later warning of its process raised as an exception).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import warnings
from typing import Any

import numpy as np

SIGNALS = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2",
                                        "SIGCHLD", "SIGPIPE", "SIGALRM") if hasattr(signal, n)]


def _handlers(logger: logging.Logger) -> tuple:
    # pytest's logging plugin swaps its own capture handlers at every phase of a test
    return tuple(h for h in logger.handlers if not type(h).__module__.startswith("_pytest"))


def _loggers() -> dict[str, Any]:
    out: dict[str, Any] = {"manager.disable": logging.root.manager.disable}
    names = [""] + sorted(
        n for n, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger) and (n == "deepfeat" or n.startswith("deepfeat."))
    )
    for n in names:
        lg = logging.getLogger(n or None)
        out[f"logger {n or 'root'}"] = (_handlers(lg), lg.level, lg.propagate, tuple(lg.filters),
                                        lg.disabled)
    return out


def _numpy_random_state() -> tuple:
    # the whole legacy state, as bytes: repr() of its 624 keys was 4 of the 5 ms a snapshot
    # took, twice per test
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return name, keys.tobytes(), pos, has_gauss, gauss


def snapshot() -> dict[str, Any]:
    """Process-wide state as comparable values, by name."""
    from PIL import Image, ImageFile

    state: dict[str, Any] = {
        "warnings.filters": tuple(warnings.filters),
        # pytest itself sets PYTEST_CURRENT_TEST at every phase of a test
        "os.environ": {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
        "cwd": os.getcwd(),
        "sys.recursionlimit": sys.getrecursionlimit(),
        "random state": random.getstate(),
        "numpy random state": _numpy_random_state(),
        "numpy errstate": tuple(sorted(np.geterr().items())),
        "PIL LOAD_TRUNCATED_IMAGES": ImageFile.LOAD_TRUNCATED_IMAGES,
        "PIL MAX_IMAGE_PIXELS": Image.MAX_IMAGE_PIXELS,
    }
    for s in SIGNALS:
        state[f"signal {signal.Signals(s).name}"] = signal.getsignal(s)
    state.update(_loggers())
    torch = sys.modules.get("torch")
    if torch is not None:  # only where some test has imported it: never imported here
        state.update({
            "torch threads": torch.get_num_threads(),
            "torch interop threads": torch.get_num_interop_threads(),
            "torch rng state": bytes(torch.random.get_rng_state().numpy()),
            "torch grad enabled": torch.is_grad_enabled(),
            "torch default dtype": torch.get_default_dtype(),
            "torch deterministic": torch.are_deterministic_algorithms_enabled(),
            "torch onednn fusion": torch._C._jit_llga_enabled(),
        })
    return state


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """One line per piece of state that differs (state first seen in ``after`` is skipped:
    e.g. a logger or torch that the test imported)."""
    out = []
    for key, old in before.items():
        new = after.get(key, old)
        if key == "os.environ":
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if diff:
                out.append(f"os.environ: {', '.join(diff)}")
        elif key == "warnings.filters":
            if new != old:
                added = [f for f in new if f not in old]
                out.append(f"warnings.filters: {len(old)} -> {len(new)} entries, new: {added[:3]}")
        elif new != old:
            out.append(f"{key}: {str(old)[:80]} -> {str(new)[:80]}")
    return out
