"""``deepfeat experiment``: learning curves, layer sweep, baselines and an HTML report.

Its options are :class:`~deepfeat.pipelines.experiment_config.ExperimentConfig`'s fields
(:mod:`deepfeat.cli.experiment_options`), the runtime options, ``--finetune-epochs`` and
``--acquisition``.
"""

from __future__ import annotations

import argparse
from typing import Any

from deepfeat.cli.experiment_options import BASELINE_WORDS, add_config_arguments, config_from_args
from deepfeat.cli.options import add_runtime_options, featurizer_kwargs
from deepfeat.cli.validate import comma_choices, field
from deepfeat.finetune.recipe import Recipe
from deepfeat.label.selectors import STRATEGIES
from deepfeat.pipelines.experiment import run as run_config

__all__ = ["BASELINE_WORDS", "HELP", "add_arguments", "format_text", "run"]

HELP = "small-data experiment: data audit, learning curves, layer sweep, baselines, HTML report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = add_config_arguments(p)["protocol"]
    g.add_argument(
        "--acquisition",
        type=comma_choices(STRATEGIES),
        default=None,
        help="instead of the learning curves: simulate labelling rounds with these strategies "
        f"({','.join(STRATEGIES)}), with and without the unlabelled rest of the pool, "
        "--repeats paired draws at each --shots; writes acquisition.csv and acquisition.md",
    )
    g.add_argument("--finetune-epochs", type=field(Recipe, "epochs", int), default=None,
                   help="fine-tuning epochs per draw (default: the recipe's)")
    add_runtime_options(p)


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    fkw = featurizer_kwargs(args)
    cache = fkw.pop("cache", None)
    progress = fkw.pop("progress", False)
    config = config_from_args(
        args, cache=cache, featurizer_options=fkw,
        finetune_options=None if args.finetune_epochs is None else {"epochs": args.finetune_epochs},
    )
    if args.acquisition:
        from deepfeat.label.experiment import run_acquisition

        fkw.update(backbone=config.backbones[0], progress=progress)
        return run_acquisition(config.src, config.out, strategies=args.acquisition, shots=config.shots,
                               repeats=config.repeats, test_src=config.test_src, test_size=config.test_size,
                               cache=cache, featurizer_options=fkw, seed=config.seed), 0
    return run_config(config, verbose=progress).to_dict(), 0


def format_text(r: dict[str, Any]) -> str:
    if "lines" in r:  # --acquisition
        return "\n".join([*r["lines"], f"report: {r['report']}; rows: {r['table']}"])
    ref = r["reference_shots"]
    lines = [f"held-out accuracy at k={ref} (and with all training images, one draw):"]
    for space, by_k in r["accuracy"].items():
        a = by_k[ref]
        ci = (
            f" [{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}]"
            if a["ci_low"] is not None
            else ""
        )
        every = (
            f"   all: {100 * by_k['all']['mean']:.1f}%" if "all" in by_k and ref != "all" else ""
        )
        lines.append(f"  {space:<40} {100 * a['mean']:5.1f}%{ci}{every}")
    lines += [f"  {v}" for v in r["verdicts"]]
    if "strategies" in r:
        lines.append(f"  frozen vs fine-tuned: {r['strategies']['verdict']}")
    lines += [f"  audit: {w}" for w in r["audit"]["warnings"]]
    space = r.get("labels_space", r["main_space"])
    fit = r["extrapolation"].get(space)
    if fit:
        lines.append(f"  how many labels ({space}, power-law extrapolation):")
        if fit.get("refused"):
            lines.append(f"    fit refused: {fit['refused']}")
        lines += [f"    {t['sentence']}" for t in fit["targets"]]
    for space, why in r.get("extrapolation_failures", {}).items():
        lines.append(f"  {space}: no power-law extrapolation: {why}")
    lines.append(f"report: {r['report']}")
    return "\n".join(lines)
