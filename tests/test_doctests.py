"""The Examples sections of the public docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import deepfeat

#: Modules whose examples fit estimators or build networks (3 to 33 s each on 2 cores, most of
#: this file's time): they run with ``-m slow`` (``make test-all``). What they show is also
#: tested in the fast suite: test_finetune, test_classify_images, test_featurize,
#: test_classify_select, test_classify_search, test_classify_persistence.
SLOW = {
    "deepfeat.finetune.estimator",
    "deepfeat.classify.transfer",
    "deepfeat.featurize.featurizer",
    "deepfeat.classify.select_space",
    "deepfeat.classify.select_auto",
    "deepfeat.classify.search",
    "deepfeat.classify.persistence",
    "deepfeat.classify.embedder",
}


#: Modules that must have examples (they once had a test file of their own, test_classify_docs).
WITH_EXAMPLES = {f"deepfeat.classify.{m}" for m in (
    "cv", "candidates", "calibration", "metrics", "data", "search", "embedder", "transfer",
    "persistence")}


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(deepfeat.__path__, "deepfeat."):
        if ".cli." in info.name or info.name.startswith("deepfeat.benchmarking"):
            continue
        names.append(info.name)
    return sorted(names)


def _params() -> list:
    return [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in _modules()]


def test_the_slow_list_names_modules_that_exist():
    assert SLOW | WITH_EXAMPLES <= set(_modules())


@pytest.mark.parametrize("name", _params())
@pytest.mark.usefixtures("own_global_rng")  # examples build torch modules, as users do
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
    assert result.attempted > 0 or name not in WITH_EXAMPLES, f"{name} lost its examples"
