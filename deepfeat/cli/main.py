"""The ``deepfeat`` command line: a thin layer over the library.

Each subcommand lives in its own module ``deepfeat.cli.cmd_<name>`` exposing

* ``HELP`` -- a one-line description,
* ``add_arguments(parser)`` -- declares its options,
* ``run(args) -> tuple[dict, int]`` -- does the work through the public API and
  returns a JSON-serialisable result and an exit code,
* optionally ``format_text(result) -> str`` -- the human-readable rendering.

``main`` adds the common options (``--json``, ``-v/--verbose``, ``-q/--quiet``), sends
logs and progress to stderr, prints the result (one JSON object on stdout with
``--json``), and turns :class:`~deepfeat.exceptions.DeepfeatError` into a one-line error
and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from deepfeat import __version__
from deepfeat.exceptions import DeepfeatError

#: Subcommands in the order ``deepfeat --help`` lists them.
COMMANDS = (
    "featurize",
    "backbones",
    "fit",
    "predict",
    "evaluate",
    "experiment",
    "demo",
    "bench",
    "cache",
    "serve",
    "export",
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

log = logging.getLogger("deepfeat")


def _load_commands() -> dict[str, Any]:
    mods = {}
    for name in COMMANDS:
        try:
            mods[name] = importlib.import_module(f"deepfeat.cli.cmd_{name}")
        except ModuleNotFoundError as exc:  # subcommand not shipped in this build
            if exc.name != f"deepfeat.cli.cmd_{name}":
                raise
    return mods


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    """Build the argument parser and return it with the subcommand modules."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")

    parser = argparse.ArgumentParser(
        prog="deepfeat",
        description="Simplified transfer learning: pretrained CNN embeddings, cached, with sklearn heads.",
    )
    parser.add_argument("--version", action="version", version=f"deepfeat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = _load_commands()
    for name, mod in mods.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP, parents=[common])
        mod.add_arguments(p)
    return parser, mods


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is *now* (it may be swapped, e.g. by pytest)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else logging.INFO
    if args.verbose:
        level = logging.DEBUG
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("deepfeat")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _default_text(result: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in result.items())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deepfeat`` console script; returns the exit code."""
    parser, mods = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(args)
    # File names that are not valid UTF-8 reach us as lone surrogates; print them escaped
    # rather than dying with UnicodeEncodeError after the work is done.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")
    mod = mods[args.command]
    try:
        result, code = mod.run(args)
    except DeepfeatError as exc:
        msg = str(exc)
        if args.json:
            print(json.dumps({"error": msg, "error_type": type(exc).__name__}))
        print(f"deepfeat {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"deepfeat {args.command}: interrupted; work done so far is kept", file=sys.stderr)
        return 130
    try:
        if args.json:
            print(json.dumps(result, default=_json_default))
        else:
            fmt = getattr(mod, "format_text", _default_text)
            text = fmt(result)
            if text:
                print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `deepfeat ... | head`: the reader left, not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return code


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
