"""Which featurizer computes a backbone's features: images or texts, decided by the registry."""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["featurizer_class", "make_featurizer"]


def featurizer_class(backbone: str) -> type:
    """:class:`~deepfeat.featurize.Featurizer` for an image backbone,
    :class:`~deepfeat.featurize.text_featurizer.TextFeaturizer` for a text encoder.

    Examples
    --------
    >>> featurizer_class("minilm").__name__, featurizer_class("efficientnet_lite0").__name__
    ('TextFeaturizer', 'Featurizer')
    """
    from deepfeat.featurize.backbones import backbone_modality

    if backbone_modality(backbone) == "text":
        from deepfeat.featurize.text_featurizer import TextFeaturizer

        return TextFeaturizer
    from deepfeat.featurize.featurizer import Featurizer

    return Featurizer


def make_featurizer(backbone: str, **options: Any) -> Any:
    """The featurizer of ``backbone`` with the ``options`` it takes (a text featurizer has no
    ``jit``, ``num_workers`` or ``tta``: those are left out)."""
    cls = featurizer_class(backbone)
    accepted = set(inspect.signature(cls).parameters)
    return cls(backbone, **{k: v for k, v in options.items() if k in accepted})
