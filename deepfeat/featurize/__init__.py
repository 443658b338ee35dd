"""Featurize: truncated pretrained backbones turning images into cached embeddings.

The names below are imported on first use (PEP 562), so that torch-free parts of this
package (:mod:`deepfeat.featurize.decode`, used by ``deepfeat serve --runtime onnx``) can
be imported without importing torch.
"""

from __future__ import annotations

from deepfeat.lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_BACKBONE": "deepfeat.featurize.backbones",
    "BackboneSpec": "deepfeat.featurize.backbones",
    "list_backbones": "deepfeat.featurize.backbones",
    "register_backbone": "deepfeat.featurize.backbones",
    "resolve_backbone": "deepfeat.featurize.backbones",
    "FeatureCache": "deepfeat.store",
    "Featurizer": "deepfeat.featurize.featurizer",
    "FeaturizeResult": "deepfeat.featurize.featurizer",
    "LabeledInputs": "deepfeat.featurize.inputs",
    "collect_images": "deepfeat.featurize.inputs",
    "load_labeled": "deepfeat.featurize.inputs",
    "scan_images": "deepfeat.featurize.inputs",
}

__all__ = sorted(_EXPORTS)


def _require(name: str, module: str) -> None:
    if module != "deepfeat.featurize.inputs":
        from deepfeat.extras import require

        require(f"deepfeat.featurize.{name}")


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, _require)
