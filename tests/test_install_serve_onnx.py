"""The torch-free server install: ``pip install 'deepfeat[serve-onnx]'`` in a fresh venv.

Builds a virtual environment from PyPI (about a minute: this is the point of the test),
checks that torch and scikit-learn are not there, and serves a model exported by this
environment with ``deepfeat serve --runtime onnx`` from the fresh one.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from serve_models import free_port, png, start_server, tone_images

from deepfeat.classify import load
from deepfeat.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
#: What the ONNX server must not need (checked absent from the fresh venv).
HEAVY = ("torch", "torchvision", "timm", "sklearn", "scipy", "pandas", "h5py", "matplotlib")


def _pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/onnxruntime/", timeout=10) as r:
            return r.status == 200
    except OSError:
        return False


def _post(port: int, doc: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", data=json.dumps(doc).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def torch_free_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``deepfeat[serve-onnx]`` installed from a copy of this source tree."""
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable: the torch-free install cannot be tried")
    tmp = tmp_path_factory.mktemp("torch-free")
    src = tmp / "src"  # a copy: building in place would leave build/ in the checkout
    shutil.copytree(ROOT / "deepfeat", src / "deepfeat",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    venv = tmp / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=300)
    # the command the README gives, with the constraint file the Makefile uses
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", "-c", str(ROOT / ".ci" / "constraints.txt"),
         f"{src}[serve-onnx]"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return venv


def _venv_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_serve_onnx_runs_from_a_torch_free_install(torch_free_venv, tiny_model_path, tmp_path):
    py = str(torch_free_venv / "bin" / "python")
    found = subprocess.run(
        [py, "-c", "import importlib.util as u, json, deepfeat\n"
         f"print(json.dumps([m for m in {HEAVY!r} if u.find_spec(m)]), deepfeat.__file__)"],
        capture_output=True, text=True, env=_venv_env(), cwd=tmp_path, timeout=120,
    )
    assert found.returncode == 0, found.stderr
    heavy, where = found.stdout.split()
    assert json.loads(heavy) == [] and str(torch_free_venv) in where  # the installed copy
    no_torch = subprocess.run([py, "-c", "import torch"], capture_output=True, env=_venv_env(), cwd=tmp_path)
    assert no_torch.returncode != 0
    # a part that needs torch says what to install, in one line
    fit = subprocess.run([str(torch_free_venv / "bin" / "deepfeat"), "fit", "x", "--out", "m.joblib"],
                         capture_output=True, text=True, env=_venv_env(), cwd=tmp_path, timeout=120)
    assert fit.returncode == 1 and fit.stdout == ""
    assert fit.stderr.strip().count("\n") == 0 and "pip install 'deepfeat[torch]'" in fit.stderr

    # a small model exported by this (full) environment
    model = tiny_model_path
    assert main(["export", str(model), "--format", "onnx", "--out", str(tmp_path / "tones.onnx"), "-q"]) == 0
    X, _ = tone_images(3, seed=7)
    images = [X[0], X[-1]]  # one dark, one light
    want = [str(v) for v in load(model).predict(images)]

    port = free_port()
    proc = start_server([str(tmp_path / "tones.onnx"), "--runtime", "onnx"], port,
                        command=[str(torch_free_venv / "bin" / "deepfeat")], env=_venv_env())
    try:
        status, _ = _post(port, {"images": []})
        assert status == 400  # a bad request is refused, and the server keeps serving
        status, doc = _post(port, {"images": [
            {"name": f"{i}.png", "data": base64.b64encode(png(a)).decode()} for i, a in enumerate(images)
        ]})
        assert status == 200, doc
        assert [r["label"] for r in doc["results"]] == want
        assert set(want) == {"dark", "light"}  # the two images are told apart
    finally:
        proc.terminate()
        proc.wait(timeout=30)
