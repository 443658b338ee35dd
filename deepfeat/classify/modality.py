"""Which embedder reads what: images or texts, told from a backbone name or from the data."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from deepfeat.classify.embedder import ImageEmbedder
from deepfeat.classify.text_embedder import TextEmbedder
from deepfeat.featurize.backbones import backbone_modality
from deepfeat.featurize.inputs import IMAGE_EXTENSIONS

__all__ = ["embedder_class", "embedder_modality", "input_modality"]

_IMAGE_OBJECTS = (np.ndarray, bytes, os.PathLike)


def embedder_class(backbone: str) -> type:
    """:class:`TextEmbedder` for a text encoder (or TF-IDF), else :class:`ImageEmbedder`."""
    return TextEmbedder if backbone_modality(backbone) == "text" else ImageEmbedder


def embedder_modality(embedder: Any) -> str:
    """``"text"`` or ``"image"``: what ``embedder`` (an embedder, or a backbone name) reads."""
    if isinstance(embedder, str):
        return backbone_modality(embedder)
    return "text" if isinstance(embedder, TextEmbedder) else "image"


def _looks_like_image_path(s: str) -> bool:
    return os.path.splitext(s)[1].lower() in IMAGE_EXTENSIONS or os.path.isfile(s)


def input_modality(items: list[Any]) -> str:
    """``"text"`` or ``"image"``: what a list of inputs holds.

    Images: PIL images, arrays, bytes, path objects, or strings that all name image files
    (an image extension, or an existing file). Texts: strings of which one at least is not
    such a path. Anything else counts as images (the image embedder then names the items
    it cannot read).

    Examples
    --------
    >>> input_modality(["a.jpg", "b.png"]), input_modality(["a great phone", "it broke"])
    ('image', 'text')
    """
    from PIL import Image

    if any(isinstance(x, (Image.Image, *_IMAGE_OBJECTS)) for x in items):
        return "image"
    strings = [x for x in items if isinstance(x, str)]
    if strings and not all(_looks_like_image_path(s) for s in strings):
        return "text"
    return "image"
