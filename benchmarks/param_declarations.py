"""Count where each featurisation parameter is declared with a default in the library.

A declaration is a function or method parameter of that name with a default value
(``def f(..., device="auto")``). ``literal`` counts those whose default is written out
(a constant such as ``"auto"`` or ``32``, ``None`` included); ``derived`` those whose
default is read from another declaration (``device=IMAGE_DEFAULTS["device"]``,
``epochs=_R.epochs``). A parameter declared once has one literal default and derives the
rest. Reads the working tree, or a commit with ``--rev``::

    python benchmarks/param_declarations.py --rev 51b960d   # before
    python benchmarks/param_declarations.py                 # after (this tree)
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from collections import Counter
from pathlib import Path

#: The featurisation parameters (Featurizer's, as the issue counts them, and on_error /
#: progress / max_length that the embedders add).
PARAMS = (
    "backbone", "layer", "pool", "weights", "checkpoint", "cache", "device", "precision", "batch_size",
    "num_workers", "tta", "jit", "storage_dtype", "lock_timeout", "max_length", "on_error", "progress",
)
ROOT = Path(__file__).resolve().parents[1]


def sources(rev: str | None) -> dict[str, str]:
    """``{path: text}`` of the library's modules, in the working tree or at ``rev``."""
    if rev is None:
        return {str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "deepfeat").rglob("*.py"))}
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", rev, "deepfeat"],
                           capture_output=True, text=True, check=True).stdout.split()
    return {n: subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{n}"], capture_output=True, text=True,
                              check=True).stdout for n in names if n.endswith(".py")}


def declarations(text: str) -> list[tuple[str, str, int, bool]]:
    """``(function, parameter, line, literal)`` of every featurisation parameter with a default."""
    out = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        a = node.args
        pos = a.posonlyargs + a.args
        pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults))
        pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
        for arg, default in pairs:
            if arg.arg in PARAMS:
                literal = isinstance(default, ast.Constant) or (
                    isinstance(default, ast.UnaryOp) and isinstance(default.operand, ast.Constant))
                out.append((node.name, arg.arg, node.lineno, literal))
    return out


def count(rev: str | None) -> tuple[Counter, Counter, list[tuple[str, str, int, str, bool]]]:
    literal, derived, rows = Counter(), Counter(), []
    for path, text in sources(rev).items():
        for func, name, line, lit in declarations(text):
            (literal if lit else derived)[name] += 1
            rows.append((path, func, line, name, lit))
    return literal, derived, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default=None, help="a commit to read instead of the working tree")
    ap.add_argument("--where", action="store_true", help="also list each declaration")
    args = ap.parse_args()
    literal, derived, rows = count(args.rev)
    print(f"featurisation parameters declared with a default in deepfeat/ ({args.rev or 'working tree'})")
    print(f"{'parameter':<14} {'literal':>7} {'derived':>7}")
    for name in PARAMS:
        print(f"{name:<14} {literal[name]:>7} {derived[name]:>7}")
    print(f"{'total':<14} {sum(literal.values()):>7} {sum(derived.values()):>7}")
    if args.where:
        for path, func, line, name, lit in sorted(rows):
            print(f"  {path}:{line} {func}({name}=...) {'literal' if lit else 'derived'}")


if __name__ == "__main__":
    main()
