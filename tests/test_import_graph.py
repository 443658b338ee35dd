"""deepfeat's import graph has no cycles and nothing imports upward.

The graph is read from the source with :mod:`ast` (nothing is imported): every ``import``
and ``from ... import`` at module level *and* inside functions, plus the lazy re-exports
of a package's ``__init__`` (a ``{"Name": "deepfeat.x.y"}`` table, PEP 562) and
``importlib.import_module("deepfeat...")`` calls with a literal name. A lazy import is still
a dependency: it only moves the failure from import time to call time.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path

import deepfeat

ROOT = Path(deepfeat.__file__).resolve().parent

#: The layers, lowest first. A module may import from its own layer and the layers below,
#: never from a layer above (STYLE.md: "the data flows one way"). ``deepfeat`` is the
#: package's own ``__init__``; the single modules at the top (``exceptions.py``,
#: ``extras.py``...) are the base, whatever their names (see :func:`_layer_of`).
LAYERS: list[set[str]] = [
    {"deepfeat"},
    {"store"},  # the on-disk format, torch-free
    {"featurize"},  # inputs -> decode -> backbone -> embeddings
    {"classify"},  # heads on embeddings
    {"finetune", "text_finetune"},  # training a backbone, with classify's heads beside it
    {"pipelines"},  # experiments: compose featurize, classify and fine-tuning
    {"label"},  # which images to label next: uses the pipelines' audit, heads and sampling
    {"serve", "export", "benchmarking"},  # run, ship or measure what the layers below make
    {"cli"},  # parses, calls the library, prints
]

#: Import edges that close a cycle and are known. Each needs a reason and an owner.
ALLOWED_CYCLE_EDGES: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _package(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


@functools.cache
def _lazy_exports(package: str) -> dict[str, str]:
    """``{"Name": "deepfeat.x.y"}`` tables in a package ``__init__`` (PEP 562 re-exports)."""
    out = {}
    for node in ast.walk(ast.parse(MODULES[package].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if (isinstance(key, ast.Constant) and isinstance(value, ast.Constant)
                        and value.value in MODULES):
                    out[key.value] = value.value
    return out


def _known(name: str) -> str | None:
    """The deepfeat module ``name`` refers to (its longest known prefix), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, node: ast.AST) -> Iterable[str]:
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = _package(module).split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
        for alias in node.names:
            full = f"{base}.{alias.name}"
            if full in MODULES:
                yield full
            elif base in MODULES and alias.name in _lazy_exports(base):
                yield _lazy_exports(base)[alias.name]
            else:
                yield base
    elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
          and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        yield node.args[0].value


def import_graph() -> dict[str, dict[str, int]]:
    """``{module: {imported deepfeat module: line}}`` over every deepfeat module (a new copy)."""
    return {m: dict(edges) for m, edges in _graph().items()}


@functools.cache
def _graph() -> dict[str, dict[str, int]]:
    graph: dict[str, dict[str, int]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, {})
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for name in _targets(module, node):
                target = _known(name) if name.split(".")[0] == "deepfeat" else None
                if target and target != module:
                    edges.setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else module
    if module.count(".") == 1 and module in MODULES and MODULES[module].parent == ROOT:
        return 0  # a single module at the top: the base every layer shares
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module}: its package {top!r} has no layer in LAYERS; place it there")


def _describe(comp: list[str], graph: dict[str, dict[str, int]]) -> str:
    edges = [f"{a} -> {b} (line {graph[a][b]})" for a in comp for b in graph[a] if b in comp]
    return "; ".join(edges)


def test_the_graph_sees_module_level_and_lazy_imports():
    graph = import_graph()
    # module level
    assert "deepfeat.featurize.runtime" in graph["deepfeat.featurize.surgery"]
    # inside a function (pipelines.experiment_spaces imports the text encoders only for texts)
    assert "deepfeat.featurize.text_encoders" in graph["deepfeat.pipelines.experiment_spaces"]
    # through a package's PEP 562 table: ``from deepfeat.featurize import Featurizer``
    assert "deepfeat.featurize.featurizer" in graph["deepfeat.serve.predictors"]


def test_cycle_finder_finds_a_planted_cycle():
    """Negative control: the checks below would pass on a graph the finder cannot read."""
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycles():
    graph = import_graph()
    for (a, b) in ALLOWED_CYCLE_EDGES:
        assert b in graph.get(a, {}), (
            f"the allowed cycle edge {a} -> {b} no longer exists: delete it from ALLOWED_CYCLE_EDGES")
        graph[a] = {k: v for k, v in graph[a].items() if k != b}
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(_describe(c, graph) for c in found)


def test_every_package_has_a_layer():
    for module in MODULES:
        _layer_of(module)


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every import from a module into a higher layer, as ``a -> b (line n)``."""
    return [f"{module} -> {target} (line {line})"
            for module, edges in sorted(graph.items()) for target, line in edges.items()
            if _layer_of(target) > _layer_of(module)]


def test_layer_check_finds_a_planted_upward_import():
    """Negative control: featurize importing the CLI is found; the CLI importing featurize is not."""
    assert upward_imports({"deepfeat.featurize.x": {"deepfeat.cli.main": 7}}) == [
        "deepfeat.featurize.x -> deepfeat.cli.main (line 7)"]
    assert upward_imports({"deepfeat.cli.main": {"deepfeat.featurize.x": 7}}) == []


def test_nothing_imports_upward():
    found = upward_imports(import_graph())
    assert not found, "imports from a higher layer: " + "; ".join(found)
