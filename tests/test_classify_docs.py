"""The docstring examples of the classify layer run (and stay true)."""

from __future__ import annotations

import doctest
import importlib

import pytest

FAST = ["cv", "candidates", "calibration", "metrics", "data"]
#: These examples fit searches or run the network (~45 s together on 2 cores).
SLOW = ["search", "embedder", "transfer", "persistence"]


@pytest.mark.parametrize("name", FAST + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW])
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFEAT_TRUST_STORE", str(tmp_path / "trusted.txt"))
    module = importlib.import_module(f"deepfeat.classify.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
