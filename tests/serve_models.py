"""Small fitted models and images for the serve and export tests (imported, not collected)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

#: A small random-weight backbone: fast to build, enough to tell dark from light images.
TINY = {
    "backbone": "torchvision:mobilenet_v3_small",
    "weights": None,
    "device": "cpu",
    "precision": "fp32",
    "num_workers": 0,
}


def tone_images(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """``n`` dark and ``n`` light noisy images of odd sizes, labelled ``dark`` / ``light``."""
    rng = np.random.default_rng(seed)
    dark = [rng.integers(0, 60, (40 + i, 56, 3), dtype=np.uint8) for i in range(n)]
    light = [rng.integers(190, 256, (48, 40 + i, 3), dtype=np.uint8) for i in range(n)]
    return dark + light, ["dark"] * n + ["light"] * n


def fit_tiny(path: Path, heads: str = "logreg") -> Path:
    """Fit and save (``.joblib``, so recorded in the trust list) a dark/light classifier."""
    from deepfeat.classify import EmbeddingClassifier, ImageEmbedder, TransferClassifier, save

    X, y = tone_images(6)
    clf = TransferClassifier(ImageEmbedder(**TINY), EmbeddingClassifier(heads), spaces=None).fit(X, y)  # one space: fast
    save(clf, path)
    return path


def png(a: np.ndarray | Image.Image, fmt: str = "PNG") -> bytes:
    img = a if isinstance(a, Image.Image) else Image.fromarray(a)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(  # noqa: ANN201 - Popen
    args: list[str], port: int, timeout: float = 180.0, command: list[str] | None = None,
    env: dict[str, str] | None = None,
):
    """Start ``deepfeat serve ARGS --port PORT`` in a process; return it once /health answers.

    ``command`` runs instead of this interpreter's ``deepfeat`` (another venv's), with ``env``.
    """
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    proc = subprocess.Popen(
        [*(command or [sys.executable, "-m", "deepfeat.cli.main"]), "serve", *args,
         "--port", str(port), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ if env is None else env),
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not answer /health in time")
