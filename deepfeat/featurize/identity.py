"""What makes two rows comparable: the fingerprint naming a feature space in the cache.

A feature space is identified by everything that changes the numbers a row holds:

* the backbone (family and architecture) and its weights identifier (for the offline zoo
  and for checkpoints, a hash of the weights file's content);
* the cut point and pooling;
* the preprocessing (resize, crop, interpolation, mean, std);
* the **resolved** compute precision (``fp32``, ``bf16`` or ``fp16``): bf16 rows differ
  from fp32 rows of the same image (mean cosine 0.9993, min 0.995 measured), so
  ``precision="auto"`` resolving to bf16 on one machine and fp32 on another gives two
  spaces, never a mix;
* test-time augmentation (``tta="flip"`` averages an image's and its mirror's embedding).

The *storage* dtype (float32 or float16 rows on disk) is not part of it: it is a property
of the stored space, chosen by whoever writes the space first, and later writers adopt it.
Any command given a cache therefore finds the rows another command computed for the same
space, whatever dtype each was asked to store.

Spaces written by deepfeat 0.1.0 were named by an older scheme (storage dtype in, neither
precision nor TTA); :func:`legacy_fingerprints` gives those names so that their rows are
still found (see :meth:`Featurizer.featurize <deepfeat.featurize.Featurizer.featurize>`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

__all__ = ["TTA_CHOICES", "fingerprint", "legacy_fingerprints", "space_precision"]

#: Test-time augmentations: ``"none"``, or ``"flip"`` (mean of the image and its mirror).
TTA_CHOICES = ("none", "flip")


def _digest(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(
    *, backbone: str, weights_id: str, layer: str, pool: str, preprocess: dict[str, Any],
    precision: str, tta: str,
) -> str:
    """The name of a feature space: 16 hex digits of a SHA-256 over what defines it.

    Examples
    --------
    >>> kw = dict(backbone="builtin:efficientnet_lite0", weights_id="w", layer="penultimate",
    ...           pool="avg", preprocess={}, tta="none")
    >>> fingerprint(precision="fp32", **kw) != fingerprint(precision="bf16", **kw)
    True
    """
    return _digest({
        "backbone": backbone, "weights_id": weights_id, "layer": layer, "pool": pool,
        "preprocess": preprocess, "precision": precision, "tta": tta,
    })


def legacy_fingerprints(
    *, backbone: str, weights_ids: Iterable[str], layer: str, pool: str, preprocess: dict[str, Any],
) -> list[str]:
    """Names deepfeat 0.1.0 gave the same space (one per weights identifier and storage dtype).

    That scheme hashed the storage dtype and neither precision nor TTA, so a legacy space
    can only stand for a space without TTA, and only when the precision its rows were
    computed with (:func:`space_precision`) is the one asked for.
    """
    return [
        _digest({
            "backbone": backbone, "weights_id": wid, "layer": layer, "pool": pool,
            "preprocess": preprocess, "dtype": dtype,
        })
        for wid in dict.fromkeys(weights_ids)
        for dtype in ("float32", "float16")
    ]


def space_precision(attrs: dict[str, Any]) -> str | None:
    """The compute precision recorded in a space's ``computed_with`` attribute, if any.

    Examples
    --------
    >>> space_precision({"computed_with": "cpu bf16 channels_last"})
    'bf16'
    """
    words = str(attrs.get("computed_with", "")).split()
    return words[1] if len(words) >= 2 else None
