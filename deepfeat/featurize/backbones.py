"""The backbone catalogue: the registry with every built-in name registered.

Names are ``efficientnet_lite0`` (the built-in offline default) and the rest of the
offline zoo (``efficientnet_lite1``, ``efficientnet_lite2``; see
:mod:`deepfeat.featurize.offline`), ``torchvision:<arch>`` for every torchvision
classification model, ``timm:<arch>`` for timm models and, for texts, the encoders of
:mod:`deepfeat.featurize.text_encoders`. The mechanics (specs, registration, lookup) live in
:mod:`deepfeat.featurize.registry`; the modules that register import only that one, and
this module imports them, so the imports run one way.
"""

from __future__ import annotations

# Importing these modules fills the registry (their decorators run at import time).
from deepfeat.featurize import families, offline, text_encoders  # noqa: F401
from deepfeat.featurize.registry import (
    DEFAULT_BACKBONE,
    BackboneSpec,
    ResolvedBackbone,
    backbone_modality,
    list_backbones,
    register_backbone,
    register_family,
    resolve_backbone,
)

__all__ = ["DEFAULT_BACKBONE", "BackboneSpec", "ResolvedBackbone", "backbone_modality", "list_backbones",
           "register_backbone", "register_family", "resolve_backbone"]
