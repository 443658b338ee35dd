"""Feature spaces an experiment compares, and computing them through the shared cache.

A feature space is one way of turning an image into a vector: a backbone cut at a layer
with given weights, or the raw pixels. Each backbone space has exactly one
:class:`~deepfeat.featurize.Featurizer` writing to the experiment's cache file, so the whole
sweep costs one forward pass per image per space, and a rerun costs none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from deepfeat.exceptions import InvalidParameterError
from deepfeat.pipelines.pixels import PIXEL_SIZE, pixel_features

__all__ = [
    "TRANSFER",
    "LAYER",
    "AUTO",
    "RANDOM_BASELINE",
    "PIXEL_BASELINE",
    "TFIDF_BASELINE",
    "BASELINE_ROLES",
    "RANDOM_SUFFIX",
    "BASELINES",
    "FeatureSpace",
    "SpaceFeatures",
    "plan_spaces",
    "suggest_layers",
    "compute_space",
]

log = logging.getLogger(__name__)

TRANSFER = "pretrained backbone"
LAYER = "layer sweep"
#: ``deepfeat fit``'s own choice of space and head, made inside each training draw.
AUTO = "automatic selection"
RANDOM_BASELINE = "random-weights baseline"
PIXEL_BASELINE = "raw-pixel baseline"
#: Texts: the 1-2-gram TF-IDF space (what a text experiment measures in place of raw pixels).
TFIDF_BASELINE = "TF-IDF baseline"
BASELINE_ROLES = (RANDOM_BASELINE, PIXEL_BASELINE, TFIDF_BASELINE)
#: Suffix of a backbone name asking for random weights.
RANDOM_SUFFIX = "[random]"
#: Baselines an experiment can measure: raw pixels (on texts: the TF-IDF space, see
#: :func:`~deepfeat.pipelines.experiment.text_settings`), the first backbone with random weights.
BASELINES = ("pixels", "random")
#: What :func:`plan_spaces` takes: :data:`BASELINES` and ``"tfidf"`` (texts).
PLANNED_BASELINES = (*BASELINES, "tfidf")


@dataclass(frozen=True)
class FeatureSpace:
    """One way of turning images into vectors.

    Attributes
    ----------
    name : str
        Unique id used in tables (``backbone``, ``backbone@layer``, ``backbone[random]``,
        ``pixels32``).
    role : str
        ``TRANSFER``, ``LAYER``, ``AUTO``, ``RANDOM_BASELINE`` or ``PIXEL_BASELINE``.
    backbone : str or None
        Registry name; ``None`` for raw pixels.
    layer : str
        Cut point (``"penultimate"`` or a layer name); ``""`` for raw pixels.
    weights : str or None
        ``"DEFAULT"`` or ``None`` (random weights).
    label : str
        Human-readable legend label.
    """

    name: str
    role: str
    backbone: str | None
    layer: str
    weights: str | None
    label: str

    @property
    def is_baseline(self) -> bool:
        return self.role in BASELINE_ROLES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _backbone_space(
    backbone: str, layer: str | None, weights: str | None, role: str
) -> FeatureSpace:
    layer = layer or "penultimate"
    name = backbone if layer == "penultimate" else f"{backbone}@{layer}"
    label = f"{backbone} ({layer})" if layer != "penultimate" else backbone
    if weights is None:
        name, label = f"{name}{RANDOM_SUFFIX}", f"{label}, random weights"
    return FeatureSpace(name, role, backbone, layer, weights, label)


def plan_spaces(
    backbones: Sequence[str],
    layers: Sequence[str] = (),
    baselines: Sequence[str] = ("pixels", "random"),
    *,
    pixel_size: int = PIXEL_SIZE,
) -> list[FeatureSpace]:
    """List the spaces of an experiment, the main one first.

    Parameters
    ----------
    backbones : sequence of str
        Backbones compared at their penultimate layer with pretrained weights; the first
        is the main space (the one whose transfer gain and extrapolation are reported).
        A name ending in ``[random]`` (``"torchvision:resnet18[random]"``) is measured with
        random weights, as a baseline: the way to compare architectures whose pretrained
        weights cannot be downloaded.
    layers : sequence of str
        Extra cut points of the first backbone (layer sweep).
    baselines : sequence of {"pixels", "random", "tfidf"}
        Raw pixels + the same head; the first backbone with random weights; TF-IDF (texts).
    pixel_size : int
        Side of the raw-pixel square.

    Examples
    --------
    >>> [s.name for s in plan_spaces(["efficientnet_lite0"], ["blocks.4"])]
    ['efficientnet_lite0', 'efficientnet_lite0@blocks.4', 'efficientnet_lite0[random]', 'pixels32']
    >>> [s.role for s in plan_spaces(["efficientnet_lite0", "torchvision:resnet18[random]"], [], [])]
    ['pretrained backbone', 'random-weights baseline']
    """
    if not backbones:
        raise InvalidParameterError("backbones: give at least one backbone name")
    unknown = set(baselines) - set(PLANNED_BASELINES)
    if unknown:
        raise InvalidParameterError(f"baselines must be among {PLANNED_BASELINES}, got {sorted(unknown)}")
    if backbones[0].endswith(RANDOM_SUFFIX):
        raise InvalidParameterError(
            f"the first backbone is the main, pretrained one; got {backbones[0]!r} "
            f"(list random-weight backbones after it)"
        )
    spaces = []
    for b in dict.fromkeys(backbones):
        if b.endswith(RANDOM_SUFFIX):
            spaces.append(_backbone_space(b[: -len(RANDOM_SUFFIX)], None, None, RANDOM_BASELINE))
        else:
            spaces.append(_backbone_space(b, None, "DEFAULT", TRANSFER))
    spaces += [
        _backbone_space(backbones[0], layer, "DEFAULT", LAYER)
        for layer in dict.fromkeys(layers)
        if layer not in ("penultimate", "")
    ]
    if "random" in baselines and f"{backbones[0]}{RANDOM_SUFFIX}" not in backbones:
        spaces.append(_backbone_space(backbones[0], None, None, RANDOM_BASELINE))
    if "tfidf" in baselines:
        spaces.append(FeatureSpace("tfidf", TFIDF_BASELINE, "tfidf", "", None, "TF-IDF 1-2-grams"))
    if "pixels" in baselines:
        spaces.append(
            FeatureSpace(
                f"pixels{pixel_size}",
                PIXEL_BASELINE,
                None,
                "",
                None,
                f"raw pixels {pixel_size}×{pixel_size} RGB",
            )
        )
    return spaces


def suggest_layers(backbone: str) -> list[str]:
    """Suggest intermediate cut points of ``backbone``, early to late, for a layer sweep.

    One layer per spatial resolution between the stem and the last stage (the output of
    each stage), preferring the shallowest module name. The penultimate embedding is not
    included (it is always measured).

    Examples
    --------
    >>> suggest_layers("torchvision:resnet18")
    ['layer1', 'layer2', 'layer3']
    >>> suggest_layers("minilm")
    ['encoder.layer.0', 'encoder.layer.1', 'encoder.layer.2', 'encoder.layer.3', 'encoder.layer.4']
    """
    from deepfeat.featurize.backbones import backbone_modality, resolve_backbone

    if backbone_modality(backbone) == "text":  # every layer of a text encoder but the last
        from deepfeat.featurize.text_encoders import middle_cut_point

        n = 2 * int(str(middle_cut_point(backbone) or "encoder.layer.0").rsplit(".", 1)[1])
        return [f"encoder.layer.{i}" for i in range(max(n - 1, 0))]
    from deepfeat.featurize.truncate import list_layers

    resolved = resolve_backbone(backbone, weights=None)
    rows = list_layers(resolved.build(), resolved.family, tuple(resolved.preprocess.crop))
    by_res: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if len(row["shape"]) == 3:
            by_res.setdefault(int(row["shape"][1]), []).append(row)
    # Drop pooled (1x1) outputs, the stem (largest maps) and the last stage (what the
    # penultimate embedding pools anyway).
    resolutions = sorted((r for r in by_res if r > 1), reverse=True)[1:-1]
    out = []
    for res in resolutions:
        depth = min(r["layer"].count(".") for r in by_res[res])
        shallow = [r["layer"] for r in by_res[res] if r["layer"].count(".") == depth]
        out.append(shallow[-1])
    return out


@dataclass
class SpaceFeatures:
    """Features of one space for all images, with what computing them cost."""

    space: FeatureSpace
    features: np.ndarray
    ok: np.ndarray
    keys: list[str | None] | None
    failures: list[dict[str, Any]]
    summary: dict[str, Any]


def compute_space(
    space: FeatureSpace,
    paths: Sequence[str],
    *,
    cache: str | None,
    featurizer_options: dict[str, Any] | None = None,
    pixel_size: int = PIXEL_SIZE,
    progress: bool = False,
) -> SpaceFeatures:
    """Compute (or read from the cache) the features of ``paths`` in ``space``."""
    t0 = time.perf_counter()
    if space.backbone is None:
        feats = pixel_features(paths, pixel_size, progress=progress)
        ok = np.isfinite(feats).all(axis=1)
        summary = {
            "total": len(paths),
            "featurized": 0,
            "cached": 0,
            "failed": int((~ok).sum()),
            "seconds": time.perf_counter() - t0,
            "forward_passes": 0,
        }
        return SpaceFeatures(space, feats, ok, None, [], summary)
    if space.backbone == "tfidf":
        return _tfidf_space(space, paths, t0)
    from deepfeat.featurize.factory import make_featurizer

    layer = None if space.layer == "penultimate" else space.layer
    f = make_featurizer(
        space.backbone,
        layer=layer,
        weights=space.weights,
        cache=cache,
        progress=progress,
        **(featurizer_options or {}),
    )
    res = f.featurize(list(paths))
    summary = {**res.summary, "forward_passes": f.forward_passes, "spec": f.spec}
    log.info(
        "%s: %d images, %d from the cache, %d computed, %d failed (%.1f s)",
        space.name,
        res.summary.get("total", len(paths)),
        res.summary.get("cached", 0),
        res.summary.get("featurized", 0),
        res.summary.get("failed", 0),
        res.summary.get("seconds", time.perf_counter() - t0),
    )
    return SpaceFeatures(space, res.features, np.asarray(res.ok), res.keys, res.failures, summary)


def _tfidf_space(space: FeatureSpace, texts: Sequence[str], t0: float) -> SpaceFeatures:
    """The TF-IDF baseline: fitted on every text of the experiment, labels unseen.

    Fitting the vocabulary and idf on all texts (training pool and test side alike) is
    transductive: it makes the baseline a little stronger than one fitted per draw, so a
    verdict of transfer over TF-IDF is, if anything, conservative.
    """
    from deepfeat.classify.text_embedder import TextEmbedder

    res = TextEmbedder("tfidf", on_error="nan").fit(list(texts)).embed(list(texts), log_failures=False)
    summary = {**res.summary, "seconds": time.perf_counter() - t0, "forward_passes": 0}
    return SpaceFeatures(space, res.features, np.asarray(res.ok), None, res.failures, summary)
