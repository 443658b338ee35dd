"""Featurize: truncated pretrained backbones turning images into cached embeddings."""

from deepfeat.featurize.backbones import (
    DEFAULT_BACKBONE,
    BackboneSpec,
    list_backbones,
    register_backbone,
    resolve_backbone,
)
from deepfeat.featurize.cache import FeatureCache
from deepfeat.featurize.featurizer import Featurizer, FeaturizeResult
from deepfeat.featurize.inputs import LabeledInputs, collect_images, load_labeled, scan_images

__all__ = [
    "DEFAULT_BACKBONE",
    "BackboneSpec",
    "FeatureCache",
    "Featurizer",
    "FeaturizeResult",
    "LabeledInputs",
    "collect_images",
    "list_backbones",
    "load_labeled",
    "register_backbone",
    "resolve_backbone",
    "scan_images",
]
