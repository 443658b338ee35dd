"""The fine-tuning recipe: every switch of the training schedule, with its default, in one place.

Each field is one documented, switchable part of the recipe (see :class:`Recipe`). The
estimator (:class:`~deepfeat.finetune.FineTuneClassifier`) takes the same names as
keyword arguments and reads its defaults from here, so there is one home for them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from deepfeat.exceptions import InvalidParameterError

__all__ = ["Recipe", "RECIPE_FIELDS"]

BN_MODES = ("auto", "train", "eval")


@dataclass(frozen=True)
class Recipe:
    """How a backbone is fine-tuned on a small labelled set.

    Parameters
    ----------
    epochs : int, default=8
        Passes over the training images (early stopping may end sooner).
    batch_size : int, default=16
        Images per optimisation step.
    lr : float, default=2e-4
        Peak learning rate of the new last layer; deeper layers get ``lr * layer_decay**d``
        (``d``: blocks between the layer and the head).
    layer_decay : float, default=0.7
        Layer-wise learning-rate decay (timm's ``param_groups_layer_decay`` through
        ``create_optimizer_v2(layer_decay=...)``: a real per-group learning rate). ``1.0``
        gives every layer the same rate.
    freeze : int, default=4
        Leading blocks kept frozen (block 0 is the stem; for EfficientNet-Lite0 the blocks
        are stem, ``blocks.0`` ... ``blocks.6`` with ``conv_head``: the default trains
        ``blocks.3`` and up). ``0`` trains everything. The early, general layers change
        least in fine-tuning, and they cost most to train (high resolution): with 4 frozen
        blocks a training image costs 0.32 CPU s instead of 0.37 with 2 (measured,
        ``benchmarks/finetune_speed.py``).
    gradual_unfreeze : bool, default=False
        Start with only the last layer trainable and unfreeze one more block (from the
        top) each epoch, down to ``freeze`` (ULMFiT's gradual unfreezing).
    warmup_epochs : int, default=1
        Linear warm-up epochs before the cosine decay (timm's ``create_scheduler_v2``,
        stepped once per optimisation step).
    weight_decay : float, default=0.05
        AdamW decoupled weight decay (not applied to biases and norm parameters).
    label_smoothing : float, default=0.1
        Cross-entropy label smoothing.
    augment : bool, default=True
        Random resized crop (scale 0.35-1) and horizontal flip around the backbone's own
        resize and normalisation; ``False`` trains on the centre crop the backbone sees.
    lp_init : bool, default=True
        LP-FT (Kumar et al. 2022): the new last layer starts as the logistic regression
        fitted on the cached frozen features; ``False`` starts it at zero.
    val_fraction : float, default=0.15
        Share of each class held out of training (at least one image per class) to pick
        the best epoch and stop early; ``0`` trains on everything for ``epochs``.
    patience : int, default=3
        Epochs without a better validation score before stopping.
    bn : {"auto", "train", "eval"}, default="auto"
        Batch-norm statistics: ``"eval"`` keeps the pretrained running statistics
        (batch statistics of a few images are noise), ``"train"`` updates them,
        ``"auto"`` is ``"eval"`` for batches under 32 images.
    seed : int, default=0
        Seeds the split, the shuffling, augmentation and dropout (each epoch reseeded,
        so a resumed run draws what an unbroken one would).
    """

    epochs: int = 8
    batch_size: int = 16
    lr: float = 2e-4
    layer_decay: float = 0.7
    freeze: int = 4
    gradual_unfreeze: bool = False
    warmup_epochs: int = 1
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    augment: bool = True
    lp_init: bool = True
    val_fraction: float = 0.15
    patience: int = 3
    bn: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> InvalidParameterError:
            return InvalidParameterError(f"fine-tuning parameter {name} must be {allowed}; got {getattr(self, name)!r}")

        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(name, "an integer >= 1")
        for name in ("freeze", "warmup_epochs", "patience", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad(name, "an integer >= 0")
        for name in ("lr", "weight_decay"):
            if not float(getattr(self, name)) >= 0:
                raise bad(name, "a number >= 0")
        if not 0 < float(self.layer_decay) <= 1:
            raise bad("layer_decay", "in (0, 1]")
        if not 0 <= float(self.label_smoothing) < 1:
            raise bad("label_smoothing", "in [0, 1)")
        if not 0 <= float(self.val_fraction) < 1:
            raise bad("val_fraction", "in [0, 1)")
        if self.bn not in BN_MODES:
            raise bad("bn", f"one of {BN_MODES}")

    @property
    def bn_eval(self) -> bool:
        """Whether batch norm keeps its running statistics during training."""
        return self.bn == "eval" or (self.bn == "auto" and self.batch_size < 32)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """A short hash of the recipe (part of a training run's identity)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


#: The recipe's field names, in order (the estimator's fine-tuning parameters).
RECIPE_FIELDS = tuple(f.name for f in fields(Recipe))
