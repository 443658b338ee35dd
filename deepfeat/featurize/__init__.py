"""Featurize: truncated pretrained backbones turning images into cached embeddings.

The names below are imported on first use (PEP 562), so that torch-free parts of this
package (:mod:`deepfeat.featurize.decode`, used by ``deepfeat serve --runtime onnx``) can
be imported without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_BACKBONE": "deepfeat.featurize.backbones",
    "BackboneSpec": "deepfeat.featurize.backbones",
    "list_backbones": "deepfeat.featurize.backbones",
    "register_backbone": "deepfeat.featurize.backbones",
    "resolve_backbone": "deepfeat.featurize.backbones",
    "FeatureCache": "deepfeat.featurize.cache",
    "Featurizer": "deepfeat.featurize.featurizer",
    "FeaturizeResult": "deepfeat.featurize.featurizer",
    "LabeledInputs": "deepfeat.featurize.inputs",
    "collect_images": "deepfeat.featurize.inputs",
    "load_labeled": "deepfeat.featurize.inputs",
    "scan_images": "deepfeat.featurize.inputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module != "deepfeat.featurize.inputs":
        from deepfeat.extras import require

        require(f"deepfeat.featurize.{name}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
