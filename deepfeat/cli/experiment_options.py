"""``deepfeat experiment`` options, generated from the fields of :class:`ExperimentConfig`.

Every configuration field gets exactly one option (``tests/test_experiment_config.py``
checks it): its name, default, choices, help text (the first sentence of the field's entry
in the ExperimentConfig docstring) and its check (the config's own, through
:meth:`ExperimentConfig.check_field`) come from the dataclass. A new field is an option
without an edit here; the tables below hold only what the command line does differently.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from collections.abc import Callable
from typing import Any

from deepfeat.cli.field_help import field_help
from deepfeat.cli.validate import backbone_name, comma_choices, integer
from deepfeat.exceptions import InvalidParameterError
from deepfeat.pipelines.experiment_config import ExperimentConfig
from deepfeat.pipelines.experiment_spaces import BASELINES, RANDOM_SUFFIX

__all__ = ["BASELINE_WORDS", "OPTION_NAMES", "add_config_arguments", "config_from_args", "option_flags"]

#: Fields whose option is not ``--<field-name>`` (aliases after the first); ``None``: the field
#: is set another way -- ``src`` is the positional argument, ``cache`` and
#: ``featurizer_options`` come from the runtime options (``--cache --device ...``, see
#: :func:`deepfeat.cli.options.add_runtime_options`), ``finetune_options`` from
#: ``--finetune-epochs``.
OPTION_NAMES: dict[str, tuple[str, ...] | None] = {
    "src": None,
    "cache": None,
    "featurizer_options": None,
    "finetune_options": None,
    "near_duplicate_threshold": ("--threshold",),
    "text_column": ("--text-column", "--text-col"),
}
#: The ``--help`` group of each field (the rest: "protocol").
GROUPS = {"backbones": "what to compare", "layers": "what to compare", "baselines": "what to compare",
          "out": None, "text_column": None}
#: Fields given together in one mutually exclusive group.
EXCLUSIVE = ("test_src", "test_size")
#: What --baselines accepts besides each baseline: these words ("both": the raw input,
#: pixels or TF-IDF for texts, and random weights). --help is written from the same table.
BASELINE_WORDS = {"both": ("pixels", "random"), "none": ()}
#: What the command line adds to a field's help.
EXTRA_HELP = {
    "out": "default: reports/<name of SRC>",
    "backbones": "e.g. 'efficientnet_lite0,torchvision:resnet18[random]'",
    "baselines": f"comma-separated among {', '.join(BASELINES)}, or {' or '.join(BASELINE_WORDS)}",
    "layers": "comma-separated",
}
METAVARS = {"backbones": "NAMES", "layers": "LAYERS", "shots": "K,K,...", "targets": "ACC,ACC,...",
            "test_size": "N_OR_FRACTION"}


def _backbones(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"give at least one backbone name, got {value!r}")
    return [backbone_name(n, suffix=RANDOM_SUFFIX) for n in names]


def _number(value: str) -> int | float:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"takes images per class (e.g. 40) or a fraction (e.g. 0.5), got {value!r}")


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None


#: How the option's text becomes the field's value, where plain ``str`` is not it.
CONVERT: dict[str, Callable[[str], Any]] = {
    "backbones": _backbones,  # registry names, with close matches suggested
    "baselines": comma_choices(BASELINES, aliases=BASELINE_WORDS),
    "test_size": _number,
}


def option_flags(name: str) -> tuple[str, ...]:
    """The option(s) that set the field ``name`` (empty: set another way)."""
    if name in OPTION_NAMES:
        return OPTION_NAMES[name] or ()
    return ("--" + name.replace("_", "-"),)


def _convert(name: str, hint: Any) -> Callable[[str], Any]:
    if name in CONVERT:
        return CONVERT[name]
    kinds = set(typing.get_args(hint)) - {type(None)} or {hint}
    if kinds == {int}:
        return integer()
    if kinds == {float}:
        return _float
    return str


def _checked(name: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """The option's text converted, then judged by the config's own check of the field."""

    def parse(value: str) -> Any:
        x = convert(value)
        try:
            checked = ExperimentConfig.check_field(name, x)
        except InvalidParameterError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return list(checked) if isinstance(checked, tuple) else checked

    parse.__name__ = name
    return parse


def _default_text(default: Any) -> Any:
    return ",".join(map(str, default)) if isinstance(default, tuple) else default


def add_config_arguments(p: argparse.ArgumentParser) -> dict[str, Any]:
    """One option per :class:`ExperimentConfig` field (and ``src`` positional).

    Returns the argument groups by title, for the command's own options.
    """
    p.add_argument("src", help="folder of class subfolders (images or .txt files), or a CSV/parquet "
                   "manifest (path,label for images; text,label for texts)")
    helps = field_help(ExperimentConfig)
    hints = typing.get_type_hints(ExperimentConfig)
    groups: dict[str | None, Any] = {None: p}
    exclusive = None
    for f in dataclasses.fields(ExperimentConfig):
        flags = option_flags(f.name)
        if not flags:
            continue
        title = GROUPS.get(f.name, "protocol")
        if title not in groups:
            groups[title] = p.add_argument_group(title)
        g = groups[title]
        if f.name in EXCLUSIVE:
            exclusive = exclusive or g.add_mutually_exclusive_group()
            g = exclusive
        default = None if f.default is dataclasses.MISSING else f.default
        text = "; ".join(t for t in (helps.get(f.name, ""), EXTRA_HELP.get(f.name, "")) if t)
        text = text[:1].lower() + text[1:] if text[1:2].islower() else text
        if hints[f.name] is bool:
            g.add_argument(*flags, dest=f.name, action="store_true", default=default, help=text)
            continue
        if default not in (None, ()):
            text += " (default: %(default)s)"
        kwargs: dict[str, Any] = {"dest": f.name, "default": _default_text(default), "help": text}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        else:
            kwargs["type"] = _checked(f.name, _convert(f.name, hints[f.name]))
            kwargs["metavar"] = METAVARS.get(f.name, f.name.upper())
        g.add_argument(*flags, **kwargs)
    return {t: g for t, g in groups.items() if t is not None}


def config_from_args(args: argparse.Namespace, **given: Any) -> ExperimentConfig:
    """The :class:`ExperimentConfig` the parsed options describe; ``given`` sets the fields
    that have no option of their own (``cache``, ``featurizer_options``, ``finetune_options``)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ExperimentConfig)
              if option_flags(f.name) and getattr(args, f.name) is not None}
    values["out"] = args.out or os.path.join("reports", os.path.basename(os.path.normpath(args.src)))
    return ExperimentConfig(src=args.src, **{**values, **given})
