"""``python -m deepfeat.serve MODEL [options]``: ``deepfeat serve`` without the rest of the CLI.

The ``deepfeat`` command loads every subcommand (and with them torch); this entry point
loads only the server, so ``--runtime onnx`` runs where torch is not installed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from deepfeat.cli import cmd_serve
from deepfeat.exceptions import DeepfeatError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deepfeat.serve", description=cmd_serve.HELP)
    cmd_serve.add_arguments(p)
    args = p.parse_args(argv)
    # this process is the server: its logging configuration is ours to set
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result, code = cmd_serve.run(args)
    except DeepfeatError as exc:
        print(f"deepfeat serve: error: {exc}", file=sys.stderr)
        return 1
    print(cmd_serve.format_text(result))
    return code


if __name__ == "__main__":
    sys.exit(main())
