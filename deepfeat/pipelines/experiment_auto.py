"""The curve ``auto``: what ``deepfeat fit``'s automatic choice achieves inside each training draw."""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepfeat.pipelines.experiment_spaces import AUTO, FeatureSpace
from deepfeat.pipelines.protocol import ProtocolResult, run_protocol

__all__ = ["auto_selection_space"]


def auto_selection_space(
    spaces, computed, labels, draws, proto, progress: bool = False, *, paths=None, cache=None,
    featurizer_options=None,
):
    """Add the space ``auto`` to ``spaces`` and its draws to ``proto``.

    Inside each training draw :class:`~deepfeat.classify.select_auto.AutoSpaceClassifier`
    chooses a space and a head among ``deepfeat fit``'s own candidates for the main
    backbone (:meth:`~deepfeat.classify.TransferClassifier.candidate_spaces`: cut points,
    flip-averaged and ensemble spaces, under the same cost-aware rule), so the curve is
    what ``fit`` achieves with k labels per class. Without ``paths`` (arrays only) it
    chooses among the experiment's own pretrained spaces.
    """
    from deepfeat.classify.select_auto import AutoSpaceClassifier

    if paths is None:
        fixed = [s for s in spaces if not s.is_baseline]
        blocks_feats = {s.name: computed[s.name].features for s in fixed}
        candidates, costs, ordered = None, None, False
    else:
        blocks_feats, candidates, costs, ordered = _fit_candidates(spaces[0], paths, cache, featurizer_options)
    blocks, start = [], 0
    for name, feats in blocks_feats.items():
        blocks.append((name, start, start + feats.shape[1]))
        start += feats.shape[1]
    X = np.hstack(list(blocks_feats.values()))
    auto = run_protocol(
        {"auto": X},
        labels,
        draws,
        search_factory=lambda y_train, seed: AutoSpaceClassifier(
            blocks, spaces=candidates, costs=costs, ordered=ordered, random_state=seed
        ),
        progress=progress,
    )
    spaces.append(
        FeatureSpace(
            "auto",
            AUTO,
            None,
            "",
            "DEFAULT",
            "automatic choice (space + head by CV inside each draw, as deepfeat fit)",
        )
    )
    return ProtocolResult(
        table=pd.concat([proto.table, auto.table], ignore_index=True),
        predictions={**proto.predictions, **auto.predictions},
    )


def _fit_candidates(main: FeatureSpace, paths, cache, featurizer_options):
    """``deepfeat fit``'s candidate spaces for ``main``'s backbone, computed on ``paths``
    through the experiment's cache: the parts' features (``{part name: rows}``, NaN rows
    for images that failed), the spaces as ``(name, part names)``, their costs, and whether
    their order is a preference (as in ``fit``)."""
    from deepfeat.classify import TransferClassifier
    from deepfeat.classify.cost import forward_passes
    from deepfeat.classify.embedder import RUNTIME_PARAMS
    from deepfeat.classify.modality import embedder_class
    from deepfeat.classify.space_embedders import featurize_parts
    from deepfeat.classify.spaces import ORDERED_MODALITIES, space_name
    from deepfeat.classify.transfer import without_large_ensembles
    from deepfeat.featurize.backbones import backbone_modality

    embedder = embedder_class(main.backbone)(main.backbone, weights=main.weights)
    specs = TransferClassifier(embedder).candidate_spaces()
    specs, _ = without_large_ensembles(specs, len(paths))
    runtime = {k: v for k, v in (featurizer_options or {}).items() if k in RUNTIME_PARAMS}
    results, _ = featurize_parts(list(paths), specs, {**runtime, "cache": cache})
    feats = {}
    for name, r in results.items():
        res = r["result"]
        feats[name] = np.where(np.asarray(res.ok)[:, None], res.features, np.nan)
    candidates = [(space_name(s), [space_name(p) for p in s]) for s in specs]
    costs = {space_name(s): forward_passes(s) for s in specs}
    return feats, candidates, costs, backbone_modality(main.backbone) in ORDERED_MODALITIES
