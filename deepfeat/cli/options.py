"""Options shared by several subcommands (one definition, mirroring the library defaults)."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Sequence
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


#: The runtime options, in ``--help`` order: every subcommand that embeds images declares
#: them here, once (``only`` picks a subset), with the Featurizer's defaults.
RUNTIME_OPTIONS = (
    "cache", "device", "precision", "jit", "batch_size", "workers", "storage_dtype", "lock_timeout",
)


def add_runtime_options(
    p: argparse.ArgumentParser,
    *,
    only: Sequence[str] = RUNTIME_OPTIONS,
    from_model: bool = False,
    cache_help: str = "HDF5 embedding cache file (created if missing)",
) -> None:
    """``--cache --device --precision --jit --batch-size --workers --storage-dtype --lock-timeout``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The subcommand's parser.
    only : sequence of str
        The options to declare, among :data:`RUNTIME_OPTIONS`.
    from_model : bool
        Every default is ``None``: a saved model's own setting applies unless the option is
        given (``predict``, ``evaluate``).
    cache_help : str
        What ``--cache`` means for this subcommand.
    """
    unknown = set(only) - set(RUNTIME_OPTIONS)
    if unknown:
        raise ValueError(f"unknown runtime options {sorted(unknown)}; choose from {RUNTIME_OPTIONS}")
    d = dict.fromkeys(_DEFAULTS) if from_model else _DEFAULTS
    specs: dict[str, tuple[str, dict[str, Any]]] = {
        "cache": ("--cache", {"default": None, "help": cache_help}),
        "device": ("--device", {"default": d["device"], "type": device,
                                "help": "auto (CUDA, then MPS, then CPU), cpu, cuda, mps"}),
        "precision": ("--precision", {"default": d["precision"], "choices": PRECISIONS,
                                      "help": "auto uses bf16/fp16 only where the hardware runs it natively"}),
        "jit": ("--jit", {"default": d["jit"], "type": _jit, "metavar": "{auto,on,off}",
                          "help": "CPU: trace and fuse the network (auto: for jobs of 1,000+ images)"}),
        "batch_size": ("--batch-size", {"default": d["batch_size"], "type": integer(1),
                                        "help": "images per forward pass (default: %(default)s)"}),
        "workers": ("--workers", {"default": d["num_workers"], "type": workers,
                                  "help": "decoding processes (auto or N >= 0)"}),
        "storage_dtype": ("--storage-dtype", {"default": d["storage_dtype"],
                                              "choices": ("float32", "float16"),
                                              "help": "dtype of the rows a new feature space stores"}),
        "lock_timeout": ("--lock-timeout", {"default": d["lock_timeout"], "type": number(0),
                                            "help": "seconds to wait for another process writing the same cache"}),
    }
    title = "featurization (default: as saved in the model)" if from_model else "featurization"
    g = p.add_argument_group(title)
    for name in only:
        flag, kwargs = specs[name]
        g.add_argument(flag, **kwargs)


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
