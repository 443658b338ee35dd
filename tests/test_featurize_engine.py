"""The featurizing engine with plug-in readers and encoders (no image or text code involved)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from deepfeat.featurize.engine import FeaturizingEngine
from deepfeat.featurize.hashing import hash_bytes
from deepfeat.featurize.identity import fingerprint
from deepfeat.featurize.runtime import resolve_runtime
from deepfeat.featurize.text_reader import text_problem


class _NumberSource:
    sizes = None

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def notes(self) -> dict[str, Any]:
        return {}

    def read(self, group: list[int]) -> tuple[torch.Tensor | None, list[str]]:
        reasons = ["negative" if self.items[i] < 0 else "" for i in group]
        good = [float(self.items[i]) for i, r in zip(group, reasons) if not r]
        return (torch.tensor(good)[:, None] if good else None), reasons

    def read_batches(self, groups, workers, pin_memory):
        for g in groups:
            yield (g, *self.read(g))


class NumberReader:
    """A third modality: numbers (a negative one is unreadable only once read)."""

    unit = "number"
    rate_key = "numbers_per_second"

    def check_sequence(self, inputs: Any) -> None:
        if isinstance(inputs, (int, float)):
            raise TypeError("a sequence of numbers")

    def keys(self, inputs):
        keys = [None if not isinstance(x, (int, float)) else hash_bytes(repr(float(x)).encode()) for x in inputs]
        return keys, {i: "not a number" for i, k in enumerate(keys) if k is None}

    def describe(self, item: Any, index: int) -> str:
        return f"number {index}"

    def open(self, items):
        return _NumberSource(items)

    def base_notes(self) -> dict[str, Any]:
        return {}

    def log_notes(self, notes: dict[str, Any]) -> None:
        pass


class PowersEncoder:
    """Embeds x as (x, x**2, x**3); counts its batches."""

    def __init__(self) -> None:
        self.runtime = resolve_runtime("cpu", "fp32", False)
        self.built = False
        self.batches = 0

    fingerprint = fingerprint(backbone="test:powers", weights_id="none", layer="last", pool="none",
                              preprocess={}, precision="fp32", tta="none")

    def space_in(self, cache: Any) -> str:
        return self.fingerprint

    def space_attrs(self) -> dict[str, Any]:
        return {"backbone": "powers"}

    def ready(self) -> bool:
        return self.built

    def network(self) -> None:
        self.built = True

    def expect(self, n: int | None) -> None:
        pass

    def probe_dim(self) -> int:
        return 3

    def plan(self, n: int, batch_size: int, sizes: Any = None) -> list[list[int]]:
        return [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        return torch.cat([x, x**2, x**3], dim=1)


class NumberFeaturizer(FeaturizingEngine):
    def __init__(self, cache: str | None = None, batch_size: int = 2) -> None:
        self.reader = NumberReader()
        self.encoder = PowersEncoder()
        self._start_engine(cache=cache, batch_size=batch_size, storage_dtype="float32", lock_timeout=30.0,
                           progress=False, engine="local", ray_address=None)


def test_a_new_reader_and_encoder_plug_into_the_engine(tmp_path):
    cache = str(tmp_path / "c.h5")
    f = NumberFeaturizer(cache=cache)
    res = f.featurize([1, 2, "x", 2, -1, 3])
    assert res.ok.tolist() == [True, True, False, True, False, True]
    assert [(x["index"], x["reason"]) for x in res.failures] == [(2, "not a number"), (4, "negative")]
    np.testing.assert_array_equal(res.features[5], [3, 9, 27])
    np.testing.assert_array_equal(res.features[3], res.features[1])
    s = res.summary
    assert (s["featurized"], s["deduplicated"], s["failed"]) == (3, 1, 2)
    assert s["total"] == s["featurized"] + s["cached"] + s["deduplicated"] + s["failed"]
    assert "numbers_per_second" in s

    again = NumberFeaturizer(cache=cache)
    res2 = again.featurize([3, 1, 4])
    assert (res2.summary["featurized"], res2.summary["cached"]) == (1, 2)
    assert again.encoder.batches == 1, "only the number the cache lacks is encoded"
    np.testing.assert_array_equal(res2.features, [[3, 9, 27], [1, 1, 1], [4, 16, 64]])


def test_a_run_of_unreadable_items_never_builds_the_encoder():
    f = NumberFeaturizer()
    res = f.featurize([-1, -2, -3])
    assert not res.ok.any() and not f.encoder.built


def test_the_ray_engine_imports_no_featurizer():
    """featurizer -> engine -> ray_engine, never back: the actors get the driver's class."""
    src = Path(__file__).parents[1] / "deepfeat" / "featurize" / "ray_engine.py"
    imported = {
        n.module for n in ast.walk(ast.parse(src.read_text())) if isinstance(n, ast.ImportFrom) and n.module
    }
    upward = {"deepfeat.featurize.featurizer", "deepfeat.featurize.text_featurizer",
              "deepfeat.featurize.factory", "deepfeat.featurize.engine", "deepfeat.classify"}
    assert not imported & upward, imported & upward


@pytest.mark.parametrize(("text", "why"), [
    ("fine", ""), ("", "empty text"), (" \t", "whitespace-only text"), (None, "not a text (got NoneType)"),
    ("caf\U0010ffe9", "undecodable bytes (byte 0xe9 is not valid utf-8)"),
])
def test_text_problems(text, why):
    assert text_problem(text) == why
