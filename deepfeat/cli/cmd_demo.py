"""``deepfeat demo``: a small end-to-end experiment on built-in real data (a few minutes on a CPU)."""

from __future__ import annotations

import argparse
from typing import Any

from deepfeat.cli.options import add_runtime_options, featurizer_kwargs
from deepfeat.pipelines.demo import run_demo

HELP = "run a small experiment end to end on built-in data (faces, digits) and write an HTML report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", default="data", help="where the demo images and cache go (default: data)"
    )
    p.add_argument("--out", default="reports/demo", help="report folder (default: reports/demo)")
    add_runtime_options(p, only=("device",))
    p.add_argument("--seed", type=int, default=0, help="base seed (default: 0)")


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    fkw = featurizer_kwargs(args)
    progress = fkw.pop("progress", False)
    res = run_demo(args.data, args.out, seed=args.seed, featurizer_options=fkw, verbose=progress)
    return res, 0


def format_text(r: dict[str, Any]) -> str:
    lines = []
    for name, e in r["experiments"].items():
        lines.append(f"{name}:")
        ref = e["reference_shots"]
        for space, by_k in e["accuracy"].items():
            a = by_k[ref]
            ci = (
                f" [{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}]"
                if a["ci_low"] is not None
                else ""
            )
            lines.append(f"  {space:<36} k={ref:<4} accuracy {100 * a['mean']:.1f}%{ci}")
        lines += [f"  {v}" for v in e["verdicts"]]
    lines.append(f"demo finished in {r['seconds']:.0f} s; open {r['index']}")
    return "\n".join(lines)
