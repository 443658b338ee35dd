"""The store package: torch-free, the one owner of the cache format, and the one reading caches
that older deepfeat wrote."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from deepfeat.cli.main import main
from deepfeat.store import FeatureCache, merge_orphan_journals, pending_dir, verify_cache

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"

TORCH_FREE = """
import sys
sys.modules["torch"] = None  # any import of torch now fails
import os, tempfile
import numpy as np
import deepfeat.store as store
cache = store.FeatureCache(os.path.join(tempfile.mkdtemp(), "c.h5"))
rows = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float16)
keys = [f"{i:032x}" for i in range(300)]
for s in range(0, 300, 100):
    with cache.writer():
        cache.append("s", {}, keys[s : s + 100], rows[s : s + 100])
order = np.random.default_rng(1).permutation(300)
got, found = store.FeatureCache(cache.path).read("s", [keys[i] for i in order])
assert found.all() and np.array_equal(got, rows[order].astype(np.float32))
assert store.verify_cache(cache.path)["ok"]
assert cache.compact()["rows"] == 300
print("torch" in sys.modules and sys.modules["torch"] is not None)
"""


def test_store_imports_and_runs_without_torch():
    """Import, write, read in random order, verify and compact with torch unimportable."""
    out = subprocess.run([sys.executable, "-c", TORCH_FREE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_importing_the_store_leaves_torch_unimported():
    """Every public name and module of the store, imported: no torch, timm or torchvision."""
    code = ("import sys, pkgutil, importlib, deepfeat.store as s\n"
            "from deepfeat.store import *\n"
            "for m in pkgutil.iter_modules(s.__path__): importlib.import_module('deepfeat.store.' + m.name)\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'timm', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['h5py']"  # (h5py: the check sees what was imported)


# ------------------------------------------------------------------ private names
#: Private names still imported across modules, each with why it is not fixed here.
ALLOWED: dict[str, str] = {}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_imports(root: Path, package: str = "deepfeat") -> list[str]:
    """``"file: module.name"`` for each private name one module takes from another.

    Counts ``from deepfeat.x import _name``, ``import deepfeat.x as m`` then ``m._name``, and
    ``Imported._name`` for a class or function imported from another module. Dunder names
    (``__version__``) are public.
    """
    found = []
    for path in sorted((root / package).rglob("*.py")):
        here = _module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported: dict[str, str] = {}  # local name -> what it names in another module
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(package):
                for a in node.names:
                    if node.module != here:
                        imported[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith(package) and a.asname and a.name != here:
                        imported[a.asname] = a.name
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(package):
                hits = [f"{node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__") and node.module != here]
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id in imported and node.attr.startswith("_") and not node.attr.startswith("__")):
                hits = [f"{imported[node.value.id]}.{node.attr}"]
            else:
                continue
            found += [f"{rel}: {h}" for h in hits]
    return sorted(set(found))


def test_no_module_imports_another_modules_private_names():
    found = private_imports(ROOT)
    new = [f for f in found if f not in ALLOWED]
    assert not new, "private names imported across modules (make them public or move them):\n" + "\n".join(new)
    stale = [a for a in ALLOWED if a not in found]
    assert not stale, f"fixed, so drop them from ALLOWED: {stale}"


def test_the_private_name_check_finds_each_form(tmp_path):
    """Negative control: a package that does each of the three things is caught three times."""
    pkg = tmp_path / "deepfeat"
    (pkg / "a").mkdir(parents=True)
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("class C:\n    _y = 1\n_z = 2\n_w = 3\n")
    (pkg / "b.py").write_text(
        "from deepfeat import __version__\nfrom deepfeat.a.x import C, _z\nimport deepfeat.a.x as m\n"
        "print(C._y, m._w, C.public, __version__)\n"
    )
    assert private_imports(tmp_path) == [
        "deepfeat/b.py: deepfeat.a.x.C._y", "deepfeat/b.py: deepfeat.a.x._w", "deepfeat/b.py: deepfeat.a.x._z",
    ]


# ------------------------------------------------------------------ older caches
def _expected_0239462() -> dict[str, tuple[list[str], np.ndarray]]:
    """The rows tests/data/cache_v2_0239462.tar.gz holds (tests/data/README.md), drawn in order."""
    rng = np.random.default_rng(26)
    a = rng.normal(size=(12, 5)).astype(np.float32)
    b = rng.normal(size=(8, 3)).astype(np.float16)
    c = rng.normal(size=(8, 5)).astype(np.float32)
    j = rng.normal(size=(3, 5)).astype(np.float32)
    p = rng.normal(size=(2, 3)).astype(np.float16)
    k32 = [f"{i:032x}" for i in range(23)]
    k16 = [f"{i:032x}" for i in range(100, 110)]
    return {"space32": (k32, np.concatenate([a, c, j])), "space16": (k16, np.concatenate([b, p]))}


@pytest.fixture
def old_cache(tmp_path) -> Path:
    with tarfile.open(DATA / "cache_v2_0239462.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "cache_v2.h5"


def test_a_segmented_cache_written_at_0239462_reads_verifies_and_folds(old_cache, capsys):
    want = _expected_0239462()
    cache = FeatureCache(old_cache)
    assert len(cache.segments()) == 3
    keys, rows = want["space32"]  # 20 rows in segments, 3 only in the journal
    got, found = cache.read("space32", keys[::-1])
    assert found.all()
    np.testing.assert_array_equal(got, rows[::-1])
    assert cache.spaces()["space32"]["preprocess"] == {"size": 8}
    keys16, rows16 = want["space16"]
    got, found = cache.read("space16", keys16, dtype=None)
    assert found.tolist() == [True] * 8 + [False] * 2  # the last two wait in a pending journal
    np.testing.assert_array_equal(got[:8], rows16[:8])
    assert verify_cache(old_cache)["ok"]
    assert main(["cache", "verify", str(old_cache)]) == 0
    capsys.readouterr()
    # the pending journal a killed Ray job left, then the writer's journal, merge in
    assert merge_orphan_journals(cache) == 2
    assert not list(Path(pending_dir(str(old_cache))).glob("*.journal"))
    assert cache.compact()["rows"] == 33
    fresh = FeatureCache(old_cache)
    assert len(fresh.segments()) == 1
    for space, (k, r) in want.items():
        got, found = fresh.read(space, k, dtype=None)
        assert found.all() and got.dtype == r.dtype
        np.testing.assert_array_equal(got, r)


def test_the_old_cache_fixture_is_not_trivially_readable(old_cache):
    """Negative control for the test above: a lost segment is noticed, not read as empty."""
    seg = next(Path(str(old_cache) + ".d").glob("j-*.h5"))
    shutil.move(seg, seg.with_suffix(".gone"))
    assert not verify_cache(old_cache)["ok"]
