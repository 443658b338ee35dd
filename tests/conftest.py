"""Shared fixtures: small real images made from scikit-image's sample photos."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# Each pytest-xdist worker gets its share of the cores, for torch and for the processes its
# tests start: with two workers on two cores, torch's default of one thread per core in each
# worker spent the extra CPU spinning against the other worker (make test on the 2-core EPYC:
# 7 min 8 s and 775 CPU s, against 5 min 42 s and 603 CPU s with one thread per worker). Set
# before torch is first imported; a value the caller exported is kept. Tests that check
# thread counts set their own (``torch_threads``).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _WORKERS and "OMP_NUM_THREADS" not in os.environ:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, _CORES // _WORKERS))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import state_guard  # noqa: E402
import torchvision.io  # noqa: E402, F401 - see below
from PIL import Image  # noqa: E402

# torch and torchvision add warnings filters when they are first imported (and torchvision
# imports sympy, which adds one more), as does urllib3 (selenium's, requests'): imported here
# once, so that the state guard below does not charge them to whichever test imports them first.
with contextlib.suppress(ImportError):
    import urllib3  # noqa: F401
# transformers imports accelerate when it first loads a text encoder, and accelerate adds a
# warnings filter at import: imported here once too.
with contextlib.suppress(ImportError):
    import accelerate.scheduler  # noqa: F401
# Fine-tuning a text encoder first imports rich (its style module draws from Python's global
# random generator at import) and torch._dynamo (it sets TORCHINDUCTOR_CACHE_DIR); scikit-learn
# sets two KMP_* variables and SciPy adds warnings filters when first imported.
with contextlib.suppress(ImportError):
    import rich.style  # noqa: F401
import scipy.special  # noqa: E402, F401
import sklearn  # noqa: E402, F401
import torch._dynamo  # noqa: E402, F401

SHARED_DATASETS = Path(os.environ.get("DEEPFEAT_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins", "moon", "page", "text", "horse")


def sample_photo(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    return img


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten real photos as JPEG/PNG files (distinct contents)."""
    d = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(PHOTOS):
        ext = "jpg" if i % 2 == 0 else "png"
        Image.fromarray(sample_photo(name)).save(d / f"{name}.{ext}")
    return d


def make_variants(src: Path, dst: Path, n: int) -> list[Path]:
    """``n`` distinct images: crops of the sample photos, re-encoded (for volume tests)."""
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(src.iterdir())]
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        ch, cw = int(h * 0.7), int(w * 0.7)
        y, x = int(rng.integers(0, h - ch)), int(rng.integers(0, w - cw))
        p = dst / f"v{i:05d}.jpg"
        Image.fromarray(img[y : y + ch, x : x + cw]).resize((160, 120)).save(p, quality=90)
        out.append(p)
    return out


@pytest.fixture(scope="session")
def many_photos(photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_variants(photo_dir, tmp_path_factory.mktemp("many"), 48)


#: A tiny CNN with random weights on the CPU, for the tests of the machinery (caches, kills,
#: full disks, concurrent writers, broken files), not of the maths: shared by the torture files.
TEST_RESNET = {
    "backbone": "timm:test_resnet",
    "weights": None,
    "device": "cpu",
    "precision": "fp32",
    "batch_size": 3,
    "num_workers": 0,
}


def cli_options(kw: dict) -> list[str]:
    """The command-line options that give the Featurizer keyword arguments ``kw``."""
    flags = {"num_workers": "--workers"}
    out: list[str] = []
    for name, value in kw.items():
        out += [flags.get(name, "--" + name.replace("_", "-")), "none" if value is None else str(value)]
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a whole module (tests that time or kill featurizing runs)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: The longest test files (wall seconds, `tests/cpu_times.py`, 2-core EPYC, one torch thread
#: per worker), handed out first: ``--dist loadfile`` gives each worker a file at a time, and
#: a long file handed out last runs alone at the end (test_user_path.py, last in name order,
#: did). test_ray.py costs its worker little CPU but waits ~35 s on its cluster's processes.
#: Only the order of files changes, never what runs; a file not listed keeps its place.
LONGEST_FILES = (
    "test_user_path.py",  # 44 s wall
    "test_ray.py",  # 32
    "test_classify_select.py",  # 29
    "test_pipelines_experiment.py",  # 28
    "test_torture_kill.py",  # 27
    "test_classify_images.py",  # 24
    "test_finetune.py",  # 24
    "test_resume.py",  # 23
    "test_cli_classify.py",  # 20
    "test_install_serve_onnx.py",  # 19
    "test_torture_concurrency.py",  # 17
    "test_classify_search.py",  # 16
    "test_perf_pixels.py",  # 16
)


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist otherwise orders files by their number of tests, not by their cost
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture
def torch_threads():
    """torch on three threads for one test: a count that neither the library's single-threaded
    sections (1) nor a worker's share of the cores (``OMP_NUM_THREADS`` above) sets, so
    that a call that leaves the count changed is seen."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dark/light classifier saved once (serve_models.fit_tiny) for the tests that only load it."""
    from serve_models import fit_tiny

    return fit_tiny(tmp_path_factory.mktemp("tiny_model") / "tones.joblib")


def shared_cache_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One feature cache for all classify test modules of a session (keyed by content, so
    files that embed the same images in the same process featurize them once)."""
    d = tmp_path_factory.getbasetemp() / "classify-cache"
    d.mkdir(exist_ok=True)
    return str(d / "features.h5")


def shared_dataset(name: str) -> Path:
    p = SHARED_DATASETS / name
    if not p.is_dir():
        pytest.skip(f"needs ../shared/datasets/{name} (not present on this machine)")
    return p


@pytest.fixture(autouse=True)
def _process_state_guard(request: pytest.FixtureRequest):
    """Fail any test that leaves process-wide state changed (warnings filters, torch threads
    and random state, logging, signal handlers, cwd, environment...): see state_guard.py.

    The other autouse fixtures request it, so it is set up first and checks last, after
    their teardown (monkeypatch restores the environment and the cwd before this looks).
    """
    before = state_guard.snapshot()
    yield
    changed = state_guard.changes(before, state_guard.snapshot())
    if changed:
        pytest.fail(f"{request.node.nodeid} changed process-wide state: " + "; ".join(changed),
                    pytrace=False)


@pytest.fixture
def own_global_rng():
    """For a test whose own code draws from the global random generators (building torch
    modules, ``torch.manual_seed``, scikit-learn's estimator checks, estimators with
    ``random_state=None``): Python's, numpy's and torch's are put back after it, so that
    the state guard judges the library, not the test."""
    import random

    import torch

    py, legacy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py)
    np.random.set_state(legacy)


@pytest.fixture(scope="session", autouse=True)
def _private_trust_store(tmp_path_factory: pytest.TempPathFactory):
    """Saved models are recorded in a trust list: keep it out of the real home folder.

    Session-wide, so module fixtures that save models see it; tests may still set their own.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPFEAT_TRUST_STORE", str(tmp_path_factory.getbasetemp() / "trusted-models.txt"))
        yield


@pytest.fixture(autouse=True)
def _no_network_weights(
    _process_state_guard: None, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Tests never download: an empty torch hub dir and no Hugging Face access."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
