"""Shared entry point: each script here is ``deepfeat bench`` restricted to one part."""

from __future__ import annotations

import sys


def run_part(part: str) -> int:
    from deepfeat.cli.main import main

    return main(["bench", "--parts", part, *sys.argv[1:]])
