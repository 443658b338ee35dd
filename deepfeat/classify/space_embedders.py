"""Embedders for space specs: one :class:`ImageEmbedder`, or a :class:`FeatureUnion` of them.

A concatenated space is a :class:`~sklearn.pipeline.FeatureUnion` of embedders sharing
one cache (each part its own space in it). :func:`embed` gives the
:class:`~deepfeat.featurize.FeaturizeResult`-like view both kinds need (features, which
rows are good, failures); :func:`with_runtime` returns a *copy* of a fitted embedder with
new runtime settings, so predicting never changes a fitted model's state.
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.pipeline import FeatureUnion

from deepfeat.classify.embedder import RUNTIME_PARAMS, ImageEmbedder
from deepfeat.classify.spaces import join_parts, space_name
from deepfeat.featurize import DEFAULT_BACKBONE, FeaturizeResult

__all__ = ["make_embedder", "embedder_parts", "embed", "featurize_parts", "with_runtime", "merge_results"]

log = logging.getLogger(__name__)


def make_embedder(
    parts: Sequence[Mapping[str, Any]], runtime: Mapping[str, Any]
) -> ImageEmbedder | FeatureUnion:
    """An unfitted embedder for ``parts`` (space parameters) with ``runtime`` settings."""
    embs = [_embedder_for(p, runtime) for p in parts]
    if len(embs) == 1:
        return embs[0]
    return FeatureUnion([(space_name(p), e) for p, e in zip(parts, embs)])


def _embedder_for(part: Mapping[str, Any], runtime: Mapping[str, Any]) -> Any:
    """An ImageEmbedder or a TextEmbedder, as the part's backbone reads images or texts;
    runtime settings the embedder does not have (``jit`` for texts) are left out."""
    from deepfeat.classify.modality import embedder_class

    cls = embedder_class(part.get("backbone", DEFAULT_BACKBONE))
    accepted = set(inspect.signature(cls).parameters)
    return cls(**dict(part), **{k: v for k, v in runtime.items() if k in accepted})


def embedder_parts(embedder: Any) -> list[ImageEmbedder]:
    """The ImageEmbedders inside ``embedder`` (itself, or a FeatureUnion's transformers)."""
    if isinstance(embedder, FeatureUnion):
        return [t for _, t in embedder.transformer_list]
    return [embedder]


def merge_results(results: Sequence[FeaturizeResult], part_norm: str | None = None) -> FeaturizeResult:
    """Concatenate the features of several results on the same inputs; a row is good only
    when it is good in every part (its failures are those of the first part that failed).
    ``part_norm`` scales each part first (:func:`~deepfeat.classify.spaces.join_parts`)."""
    if len(results) == 1:
        return results[0]
    ok = np.logical_and.reduce([np.asarray(r.ok) for r in results])
    failures: dict[int, dict[str, Any]] = {}
    for r in results:
        for f in r.failures:
            failures.setdefault(f["index"], f)
    summary = {
        k: sum(r.summary.get(k, 0) for r in results)
        for k in ("total", "featurized", "cached", "failed", "seconds")
    }
    summary["failed"] = int((~ok).sum())
    summary["total"] = int(len(ok))
    summary["parts"] = [dict(r.summary) for r in results]
    feats = join_parts([r.features for r in results], part_norm)
    return FeaturizeResult(
        feats, ok, results[0].keys, [failures[i] for i in sorted(failures)], summary
    )


def embed(embedder: Any, X: Any, part_norm: str | None = None) -> FeaturizeResult:
    """Featurize ``X`` with a fitted embedder (single or union); failures kept, never raised.
    A union's parts are joined by :func:`~deepfeat.classify.spaces.join_parts` with ``part_norm``.
    An unreadable image is logged once (by the first part), not once per part."""
    parts = embedder_parts(embedder)
    return merge_results([e.embed(X, log_failures=i == 0) for i, e in enumerate(parts)], part_norm)


def with_runtime(embedder: Any, runtime: Mapping[str, Any]) -> Any:
    """A copy of the fitted ``embedder`` whose runtime settings are ``runtime``.

    The feature space (``featurizer_spec_``) is shared with the original; nothing of the
    original is modified.
    """
    runtime = {k: v for k, v in runtime.items() if k in RUNTIME_PARAMS}
    out = copy.copy(embedder)
    if isinstance(out, FeatureUnion):
        out.transformer_list = [
            (name, with_runtime(t, runtime)) for name, t in embedder.transformer_list
        ]
        return out
    current = embedder.get_params()
    runtime = {k: v for k, v in runtime.items() if k in current}  # a TextEmbedder has no jit
    if any(current[k] != v for k, v in runtime.items()):
        out.set_params(**runtime)
    return out


def featurize_parts(
    items: list[Any],
    specs: Sequence[Sequence[Mapping[str, Any]]],
    runtime: Mapping[str, Any],
    deadline: float | None = None,
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Featurize every distinct part of ``specs`` once, in order.

    Parameters
    ----------
    items : list
        The images.
    specs : sequence of sequence of dict
        Candidate spaces, each as its parts (:class:`ImageEmbedder` space parameters).
    runtime : mapping
        :class:`ImageEmbedder` runtime parameters (cache, device...), shared by the parts.
    deadline : float or None
        ``time.perf_counter()`` value: parts other than the first space's are skipped when
        featurizing them would take more than half of the time left.

    Returns
    -------
    results : dict
        ``{part name: {"embedder": fitted embedder, "result": FeaturizeResult}}``.
    skipped : list of dict
        ``{"space", "status"}`` rows for the spaces left without one of their parts.
    """
    parts: dict[str, dict[str, Any]] = {}
    for spec in specs:
        for p in spec:
            parts.setdefault(space_name(p), p)
    if len(parts) > 1:
        log.info(
            "candidate spaces: %d (%s); featurizing %d distinct parts: up to %d embeddings "
            "(%d images per part; a flip-averaged part takes two forward passes per image; "
            "images already in the cache cost none)",
            len(specs),
            ", ".join(space_name(s) for s in specs),
            len(parts),
            len(parts) * len(items),
            len(items),
        )
    results: dict[str, dict[str, Any]] = {}
    per_image = None
    first_parts = {space_name(p) for p in specs[0]}
    for k, (name, p) in enumerate(parts.items(), 1):
        if name not in first_parts and deadline is not None:
            left = deadline - time.perf_counter()
            guess = 0.0 if per_image is None else per_image * len(items)
            if left <= 0 or guess > 0.5 * left:  # keep half of what is left for the search
                log.info(
                    "skipping space part %s: about %.0f s of featurizing, %.0f s left",
                    name,
                    guess,
                    left,
                )
                continue
        t0 = time.perf_counter()
        emb = make_embedder([p], {**runtime, "on_error": "nan"}).fit(items)
        res = emb.embed(items, log_failures=False)  # fit reports each once, below
        secs = time.perf_counter() - t0
        done = res.summary.get("featurized", 0)
        if done:
            per_image = max(per_image or 0.0, secs / done)
        log.info(
            "space part %d/%d %s: %d images embedded, %d from the cache (%.1f s)",
            k,
            len(parts),
            name,
            done,
            res.summary.get("cached", 0),
            secs,
        )
        results[name] = {"embedder": emb, "result": res}
    skipped = [
        {"space": space_name(s), "status": "skipped: time budget"}
        for s in specs
        if not all(space_name(p) in results for p in s)
    ]
    return results, skipped
