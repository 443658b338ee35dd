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

Exit codes: 0 success; 1 the work failed (unreadable data, a damaged cache...); 2 a bad
argument -- a malformed or out-of-range option (argparse, with the types of
:mod:`deepfeat.cli.validate` built from the library's own checks) or a value the library
rejects with :class:`~deepfeat.exceptions.InvalidParameterError`. Either way the error is
one line on stderr naming the option, what it allows and what it got (and, with
``--json``, a JSON object ``{"error", "error_type"}`` on stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from deepfeat import __version__
from deepfeat.exceptions import DeepfeatError, InvalidParameterError

#: Subcommands in the order ``deepfeat --help`` lists them.
COMMANDS = (
    "featurize",
    "backbones",
    "fit",
    "predict",
    "evaluate",
    "experiment",
    "suggest",
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


class _Unavailable:
    """A subcommand whose dependencies are not installed: listed, and one line when run."""

    def __init__(self, name: str, exc: ModuleNotFoundError) -> None:
        from deepfeat.extras import install_hint

        self.message = (
            f"deepfeat {name} needs {exc.name}, which is not installed: {install_hint(exc.name)}"
        )
        self.HELP = f"(needs {exc.name}: {install_hint(exc.name)})"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(self, args: argparse.Namespace) -> NoReturn:
        raise DeepfeatError(self.message)


def _load_commands(only: str | None = None) -> dict[str, Any]:
    mods = {}
    for name in COMMANDS if only is None else (only,):
        try:
            mods[name] = importlib.import_module(f"deepfeat.cli.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"deepfeat.cli.cmd_{name}":  # subcommand not shipped in this build
                continue
            if exc.name is None or exc.name.split(".")[0] == "deepfeat":
                raise
            # an optional dependency (torch on a torch-free server install): say what to install
            mods[name] = _Unavailable(name, exc)
    return mods


class UsageError(Exception):
    """A command line argparse rejected; ``prog`` names the (sub)command."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors reach ``main`` (one line, exit 2), not ``sys.exit``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


def build_parser(only: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    """Build the argument parser and return it with the subcommand modules.

    With ``only``, just that subcommand is imported: ``deepfeat serve --runtime onnx`` then
    never imports torch, which the other subcommands need.
    """
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")

    parser = _Parser(
        prog="deepfeat",
        description="Simplified transfer learning: pretrained CNN embeddings, cached, with sklearn heads.",
    )
    parser.add_argument("--version", action="version", version=f"deepfeat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = _load_commands(only)
    for name, mod in mods.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP, parents=[common])
        mod.add_arguments(p)
    return parser, mods


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is *now* (it may be swapped, e.g. by pytest)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


@contextlib.contextmanager
def _cli_output(args: argparse.Namespace) -> Iterator[None]:
    """The CLI's logging on stderr and escaped stdout, for this call only.

    ``main`` also runs inside other processes (tests, notebooks, ``subprocess``-free
    wrappers): the ``deepfeat`` logger's handlers, level and propagation and stdout's error
    handler are the caller's again when it returns.
    """
    level = logging.WARNING if args.quiet else logging.INFO
    if args.verbose:
        level = logging.DEBUG
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("deepfeat")
    saved = (root.handlers[:], root.level, root.propagate)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # File names that are not valid UTF-8 reach us as lone surrogates; print them escaped
    # rather than dying with UnicodeEncodeError after the work is done.
    stdout = sys.stdout
    reconfigure = getattr(stdout, "reconfigure", None)
    errors = getattr(stdout, "errors", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")
    try:
        yield
    finally:
        root.handlers[:], level_before, root.propagate = saved
        root.setLevel(level_before)
        if reconfigure is not None and errors is not None:
            with contextlib.suppress(ValueError, OSError):  # a closed stdout
                reconfigure(errors=errors)


def _default_text(result: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in result.items())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deepfeat`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser, mods = build_parser(first if first in COMMANDS else None)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        prog = exc.prog
        if prog == "deepfeat":  # e.g. an unknown option after a valid subcommand
            named = next((a for a in argv if not a.startswith("-")), None)
            prog = f"deepfeat {named}" if named in mods else prog
        msg = f"{exc} (see '{prog} --help')"
        return _error(prog, msg, "UsageError", "--json" in argv, EXIT_USAGE)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    with _cli_output(args):
        return _run(args, mods[args.command])


def _run(args: argparse.Namespace, mod: Any) -> int:
    try:
        result, code = mod.run(args)
    except DeepfeatError as exc:
        code = EXIT_USAGE if isinstance(exc, InvalidParameterError) else EXIT_FAILURE
        return _error(f"deepfeat {args.command}", str(exc), type(exc).__name__, args.json, code)
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


def _error(prog: str, message: str, kind: str, as_json: bool, code: int) -> int:
    """Print one error line on stderr (and a JSON object on stdout with ``--json``)."""
    message = " ".join(message.split())  # one line, whatever the message held
    if as_json:
        print(json.dumps({"error": message, "error_type": kind}))
    print(f"{prog}: error: {message}", file=sys.stderr)
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
