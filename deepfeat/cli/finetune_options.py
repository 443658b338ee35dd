"""``deepfeat fit --finetune`` options: the fine-tuning recipe, mirrored from :class:`Recipe`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from deepfeat.finetune.recipe import BN_MODES, Recipe

_R = Recipe()


def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    """``--finetune`` and the recipe switches (defaults: :class:`~deepfeat.finetune.Recipe`)."""
    g = p.add_argument_group("fine-tuning (with --finetune; see the README section 'Fine-tuning')")
    g.add_argument("--finetune", action="store_true",
                   help="fine-tune the backbone first (LP-FT), then search the head on its embeddings")
    g.add_argument("--epochs", type=int, default=_R.epochs, help="training epochs (default: %(default)s)")
    g.add_argument("--freeze", type=int, default=_R.freeze, metavar="BLOCKS",
                   help="leading blocks kept frozen, the stem being block 0 (default: %(default)s)")
    g.add_argument("--lr", type=float, default=_R.lr, help="peak learning rate of the last layer (default: %(default)s)")
    g.add_argument("--layer-decay", type=float, default=_R.layer_decay,
                   help="learning-rate factor per block towards the input (default: %(default)s)")
    g.add_argument("--ft-batch-size", type=int, default=_R.batch_size, help="training batch (default: %(default)s)")
    g.add_argument("--gradual-unfreeze", action="store_true", help="unfreeze one block per epoch from the top")
    g.add_argument("--no-augment", action="store_true", help="no random resized crop / flip")
    g.add_argument("--no-lp-init", action="store_true",
                   help="start the last layer at zero instead of the logistic regression on frozen features")
    g.add_argument("--label-smoothing", type=float, default=_R.label_smoothing)
    g.add_argument("--val-fraction", type=float, default=_R.val_fraction,
                   help="share of each class held out for early stopping (default: %(default)s)")
    g.add_argument("--patience", type=int, default=_R.patience)
    g.add_argument("--bn", default=_R.bn, choices=BN_MODES, help="batch-norm statistics (default: %(default)s)")
    g.add_argument("--finetune-dir", default=None,
                   help="training state and fine-tuned checkpoint (default: OUT's name + '.finetune/'); "
                        "rerunning the same command resumes there")


def finetune_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """:class:`~deepfeat.finetune.FineTuneClassifier` keyword arguments from parsed options."""
    work = args.finetune_dir or os.path.splitext(os.path.abspath(args.out))[0] + ".finetune"
    return {
        "epochs": args.epochs, "freeze": args.freeze, "lr": args.lr, "layer_decay": args.layer_decay,
        "batch_size": args.ft_batch_size, "gradual_unfreeze": args.gradual_unfreeze,
        "augment": not args.no_augment, "lp_init": not args.no_lp_init,
        "label_smoothing": args.label_smoothing, "val_fraction": args.val_fraction,
        "patience": args.patience, "bn": args.bn, "seed": args.seed, "work_dir": work,
        "verbose": 0 if args.quiet else 1,
    }
