"""The Examples sections of the public docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import deepfeat


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(deepfeat.__path__, "deepfeat."):
        if ".cli." in info.name or info.name.startswith("deepfeat.benchmarking"):
            continue
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
@pytest.mark.usefixtures("own_global_rng")  # examples build torch modules, as users do
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
