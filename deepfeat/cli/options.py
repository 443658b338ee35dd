"""Options shared by several subcommands (one definition, mirroring the library defaults)."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from deepfeat.cli.validate import backbone_name, device, integer, number, workers
from deepfeat.featurize.backbones import DEFAULT_BACKBONE
from deepfeat.featurize.featurizer import Featurizer
from deepfeat.featurize.identity import TTA_CHOICES
from deepfeat.featurize.runtime import PRECISIONS
from deepfeat.featurize.text_encoders import DEFAULT_TEXT_BACKBONE, TEXT_POOLINGS
from deepfeat.featurize.truncate import POOLINGS

_DEFAULTS = {k: p.default for k, p in inspect.signature(Featurizer).parameters.items()}


def _weights(value: str) -> str | None:
    return None if value.lower() in ("none", "random") else value


def _jit(value: str) -> bool | str:
    choices = {"auto": "auto", "on": True, "off": False}
    if value not in choices:
        raise argparse.ArgumentTypeError(f"invalid choice {value!r} (choose from auto, on, off)")
    return choices[value]


def add_backbone_options(p: argparse.ArgumentParser, *, tta: bool = False, texts: bool = False) -> None:
    """``--backbone --weights --checkpoint --layer --pool`` (and ``--tta`` where ``tta``).

    ``--tta`` is offered only by commands that pass it on (``tta=True``), never accepted
    and then ignored. ``texts``: the command reads texts too; ``--backbone`` then defaults
    to ``None`` (the caller picks the default for the source: images or texts) and
    ``--pool`` offers the text poolings.
    """
    g = p.add_argument_group("backbone")
    if texts:
        g.add_argument("--backbone", default=None, type=backbone_name,
                       help=f"registry name (default: {DEFAULT_BACKBONE} for images, {DEFAULT_TEXT_BACKBONE} "
                            "for texts; both work offline); see `deepfeat backbones`")
    else:
        g.add_argument("--backbone", default=DEFAULT_BACKBONE, type=backbone_name,
                       help=f"registry name (default: {DEFAULT_BACKBONE}, works offline); see `deepfeat backbones`")
    g.add_argument("--weights", type=_weights, default=_DEFAULTS["weights"],
                   help="DEFAULT, a named weights variant, or 'none' for random weights")
    g.add_argument("--checkpoint", default=None, help="local state-dict file to load")
    g.add_argument("--layer", default=None, help="graph node to cut at (default: penultimate)")
    g.add_argument("--pool", default=_DEFAULTS["pool"], choices=POOLINGS + (TEXT_POOLINGS if texts else ()),
                   help="pooling for a named layer" + (" (texts: mean, the default, or cls)" if texts else ""))
    if tta:
        g.add_argument("--tta", default=_DEFAULTS["tta"], choices=TTA_CHOICES,
                       help="test-time augmentation: 'flip' averages each image's and its mirror's "
                            "embedding (a feature space of its own)")


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """``--cache --device --precision --jit --batch-size --workers --storage-dtype --lock-timeout``."""
    g = p.add_argument_group("featurization")
    g.add_argument("--cache", default=None, help="HDF5 embedding cache file (created if missing)")
    g.add_argument("--device", default=_DEFAULTS["device"], type=device,
                   help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    g.add_argument("--precision", default=_DEFAULTS["precision"], choices=PRECISIONS,
                   help="auto uses bf16/fp16 only where the hardware runs it natively")
    g.add_argument("--jit", default=_DEFAULTS["jit"], type=_jit, metavar="{auto,on,off}",
                   help="CPU: trace and fuse the network (auto: for jobs of 1,000+ images)")
    g.add_argument("--batch-size", type=integer(1), default=_DEFAULTS["batch_size"],
                   help="images per forward pass (default: %(default)s)")
    g.add_argument("--workers", default=_DEFAULTS["num_workers"], type=workers,
                   help="decoding processes (auto or N >= 0)")
    g.add_argument("--storage-dtype", default=_DEFAULTS["storage_dtype"], choices=("float32", "float16"))
    g.add_argument("--lock-timeout", type=number(0), default=_DEFAULTS["lock_timeout"],
                   help="seconds to wait for another process writing the same cache")


def featurizer_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Featurizer keyword arguments from parsed options (only those the parser declared)."""
    mapping = {
        "backbone": "backbone", "weights": "weights", "checkpoint": "checkpoint", "layer": "layer",
        "pool": "pool", "tta": "tta", "cache": "cache", "device": "device", "precision": "precision", "jit": "jit",
        "batch_size": "batch_size", "workers": "num_workers", "storage_dtype": "storage_dtype",
        "lock_timeout": "lock_timeout",
    }
    kw = {dst: getattr(args, src) for src, dst in mapping.items() if hasattr(args, src)}
    kw["progress"] = not getattr(args, "quiet", False)
    return kw
