"""``deepfeat experiment``: learning curves, layer sweep, baselines and an HTML report."""

from __future__ import annotations

import argparse
import inspect
import os
from typing import Any

from deepfeat.cli.options import add_runtime_options, featurizer_kwargs
from deepfeat.cli.validate import backbone_name, checked, comma_choices, field, integer, numbers
from deepfeat.finetune.recipe import Recipe
from deepfeat.label.selectors import STRATEGIES
from deepfeat.pipelines.audit import check_threshold
from deepfeat.pipelines.experiment import run_experiment
from deepfeat.pipelines.extrapolate import check_targets
from deepfeat.pipelines.heads import SEARCHES
from deepfeat.pipelines.sampling import check_test_size, parse_shots
from deepfeat.pipelines.spaces import BASELINES, RANDOM_SUFFIX
from deepfeat.pipelines.strategies import parse_strategies

HELP = "small-data experiment: data audit, learning curves, layer sweep, baselines, HTML report"

_D = {k: p.default for k, p in inspect.signature(run_experiment).parameters.items()}


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _backbones(value: str) -> list[str]:
    names = _csv(value)
    if not names:
        raise argparse.ArgumentTypeError(f"give at least one backbone name, got {value!r}")
    return [backbone_name(n, suffix=RANDOM_SUFFIX) for n in names]


def _number(value: str) -> int | float:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes images per class (e.g. 40) or a fraction (e.g. 0.5), got {value!r}"
        ) from None


_test_size = checked(lambda v: check_test_size(_number(v)), "test_size")
#: What --baselines accepts: each baseline, comma-separated, or one of these words ("both":
#: the raw input, pixels or TF-IDF for texts, and random weights). --help is written from
#: the same table.
BASELINE_WORDS = {"both": ("pixels", "random"), "none": ()}
_baselines = comma_choices(BASELINES, aliases=BASELINE_WORDS)
_targets = checked(lambda v: check_targets(numbers()(v)), "targets")
_threshold = checked(lambda v: check_threshold(float(v) if _is_number(v) else v), "threshold")


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="folder of class subfolders (images or .txt files), or a CSV/parquet "
                   "manifest (path,label for images; text,label for texts)")
    p.add_argument("--text-column", "--text-col", dest="text_col", default=_D["text_column"],
                   help="text column of a CSV/parquet source of texts (default: %(default)s)")
    p.add_argument("--out", default=None, help="report folder (default: reports/<name of SRC>)")
    g = p.add_argument_group("what to compare")
    g.add_argument(
        "--backbones",
        type=_backbones,
        default=list(_D["backbones"]),
        help="comma-separated backbones; the first is the main, pretrained one; add "
        "'[random]' to a name to measure it with random weights, e.g. "
        "'efficientnet_lite0,torchvision:resnet18[random]' (default: efficientnet_lite0)",
    )
    g.add_argument(
        "--layers",
        default="",
        help="extra cut points of the first backbone for a layer sweep, comma-separated, "
        "or 'auto' (one per stage); default: none",
    )
    g.add_argument(
        "--baselines",
        type=_baselines,
        default=",".join(_D["baselines"]),
        help=f"comma-separated among {', '.join(BASELINES)} (pixels: raw pixels, for texts TF-IDF; random: the "
        f"first backbone with random weights), or {' or '.join(BASELINE_WORDS)} "
        "(default: %(default)s)",
    )
    g = p.add_argument_group("protocol")
    g.add_argument(
        "--shots",
        type=checked(parse_shots, "shots"),
        default=",".join(map(str, _D["shots"])),
        help="labelled images per class, comma-separated (default: %(default)s)",
    )
    g.add_argument(
        "--repeats",
        type=integer(1),
        default=_D["repeats"],
        help="random draws per shot value (default: %(default)s)",
    )
    split = g.add_mutually_exclusive_group()
    split.add_argument("--test-src", default=None, help="a separate labelled test set")
    split.add_argument(
        "--test-size",
        type=_test_size,
        default=None,
        help="hold out N images per class (int) or a fraction of each class "
        "(float) with a fixed-seed split; default: score each draw on the rest",
    )
    g.add_argument(
        "--drop-leaked",
        action="store_true",
        help="drop test images that duplicate a training image",
    )
    g.add_argument(
        "--threshold",
        type=_threshold,
        default=_D["near_duplicate_threshold"],
        help="cosine similarity above which images are near duplicates (default: %(default)s)",
    )
    g.add_argument(
        "--targets",
        type=_targets,
        default=list(_D["targets"]),
        help="target accuracies for the extrapolation (default: 0.8,0.9,0.95)",
    )
    g.add_argument(
        "--max-per-class",
        type=integer(1),
        default=None,
        help="subsample each class to at most N images (fixed seed) to bound the run time",
    )
    g.add_argument(
        "--search",
        choices=SEARCHES,
        default=_D["search"],
        help="hyperparameter search inside each training draw: fast (logistic regression, "
        "C per decade) or full (every head and grid, several times slower); default: %(default)s",
    )
    g.add_argument(
        "--select",
        choices=("none", "auto"),
        default=_D["select"],
        help="auto: also measure fit's automatic choice of space and head, made inside each "
        "training draw (an extra curve 'auto' next to each fixed space)",
    )
    g.add_argument(
        "--acquisition",
        type=comma_choices(STRATEGIES),
        default=None,
        help="instead of the learning curves: simulate labelling rounds with these strategies "
        f"({','.join(STRATEGIES)}), with and without the unlabelled rest of the pool, "
        "--repeats paired draws at each --shots; writes acquisition.csv and acquisition.md",
    )
    g.add_argument("--seed", type=int, default=_D["seed"], help="base seed (default: %(default)s)")
    g.add_argument(
        "--strategies", default=",".join(_D["strategies"]), type=checked(parse_strategies),
        help="frozen, or frozen,finetune: also fine-tune the main backbone inside every training draw "
        "and compare on the same draws (default: %(default)s)",
    )
    g.add_argument("--finetune-epochs", type=field(Recipe, "epochs", int), default=None,
                   help="fine-tuning epochs per draw (default: the recipe's)")
    add_runtime_options(p)


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    fkw = featurizer_kwargs(args)
    cache = fkw.pop("cache", None)
    progress = fkw.pop("progress", False)
    out = args.out or os.path.join("reports", os.path.basename(os.path.normpath(args.src)))
    if args.acquisition:
        from deepfeat.label.experiment import run_acquisition

        fkw.update(backbone=args.backbones[0], progress=progress)
        return run_acquisition(args.src, out, strategies=args.acquisition, shots=args.shots,
                               repeats=args.repeats, test_src=args.test_src, test_size=args.test_size,
                               cache=cache, featurizer_options=fkw, seed=args.seed), 0
    res = run_experiment(
        args.src,
        out,
        backbones=args.backbones,
        layers=args.layers,
        shots=args.shots,
        repeats=args.repeats,
        test_src=args.test_src,
        test_size=args.test_size,
        cache=cache,
        drop_leaked=args.drop_leaked,
        baselines=args.baselines,
        near_duplicate_threshold=args.threshold,
        targets=args.targets,
        max_per_class=args.max_per_class,
        search=args.search,
        select=args.select,
        seed=args.seed,
        featurizer_options=fkw,
        verbose=progress,
        strategies=args.strategies,
        finetune_options=None if args.finetune_epochs is None else {"epochs": args.finetune_epochs},
        text_column=args.text_col,
    )
    return res.to_dict(), 0


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
