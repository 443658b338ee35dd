"""``deepfeat fit --finetune`` options, generated from the fields of :class:`Recipe`.

Every recipe field gets exactly one option (``tests/test_cli_errors.py`` checks it): its
name, type, default, help text (the first sentence of the field's entry in the Recipe
docstring) and its check (the Recipe's own ``__post_init__``, through
:func:`deepfeat.cli.validate.field`) all come from the dataclass. A new field is an option
without an edit here; only the few names below differ from the field's.
"""

from __future__ import annotations

import argparse
import os
import typing
from dataclasses import fields
from typing import Any

from deepfeat.cli.field_help import field_help
from deepfeat.cli.validate import field
from deepfeat.finetune.recipe import BN_MODES, Recipe

#: Recipe fields whose option is not ``--<field-name>``: the runtime ``--batch-size`` is the
#: featurizing batch, and ``--seed`` is fit's own option (it seeds the head search too).
OPTION_NAMES = {"batch_size": "--ft-batch-size", "seed": None}
#: Metavars that say more than the type.
METAVARS = {"freeze": "BLOCKS"}


def option_name(name: str, default: Any) -> str | None:
    """The option that sets the recipe field ``name`` (``None``: set by another option)."""
    if name in OPTION_NAMES:
        return OPTION_NAMES[name]
    flag = name.replace("_", "-")
    return f"--no-{flag}" if default is True else f"--{flag}"


def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    """``--finetune`` and one option per recipe field (defaults: :class:`~deepfeat.finetune.Recipe`)."""
    g = p.add_argument_group("fine-tuning (with --finetune; see docs/finetune.md)")
    g.add_argument("--finetune", action="store_true",
                   help="fine-tune the backbone first (images: LP-FT; texts: contrastive pairs, the SetFit "
                        "idea), then search the head on its embeddings")
    helps = field_help(Recipe)
    hints = typing.get_type_hints(Recipe)
    for f in fields(Recipe):
        flag = option_name(f.name, f.default)
        if flag is None:
            continue
        text = helps.get(f.name, "")
        if hints[f.name] is bool:
            text = f"turn off: {text}" if f.default else text
            g.add_argument(flag, dest=f"recipe_{f.name}", action="store_false" if f.default else "store_true",
                           default=f.default, help=text)
        elif f.name == "bn":
            g.add_argument(flag, dest=f"recipe_{f.name}", default=f.default, choices=BN_MODES,
                           help=f"{text} (default: %(default)s)")
        else:
            g.add_argument(flag, dest=f"recipe_{f.name}", default=f.default,
                           type=field(Recipe, f.name, hints[f.name]),
                           metavar=METAVARS.get(f.name, f.name.upper()),
                           help=f"{text} (default: %(default)s)")
    g.add_argument("--finetune-dir", default=None,
                   help="training state and fine-tuned checkpoint (default: OUT's name + '.finetune/'); "
                        "rerunning the same command resumes there")


def finetune_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """:class:`~deepfeat.finetune.FineTuneClassifier` keyword arguments from parsed options."""
    work = args.finetune_dir or os.path.splitext(os.path.abspath(args.out))[0] + ".finetune"
    recipe = {f.name: getattr(args, f"recipe_{f.name}") for f in fields(Recipe)
              if option_name(f.name, f.default) is not None}
    return {**recipe, "seed": args.seed, "work_dir": work, "verbose": 0 if args.quiet else 1}
