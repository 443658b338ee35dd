"""``deepfeat export --format onnx``: one ONNX graph from image crops to class probabilities.

The graph
    Input ``pixels``: **uint8**, shape ``(N, 3, H, W)``, RGB, ``H x W`` the backbone's crop
    size, already resized (shorter side to ``resize`` with the recorded interpolation) and
    centre-cropped -- what :func:`deepfeat.serve.pixels.to_model_input` makes from an image.
    The batch axis is dynamic. Output ``probabilities``: float32 ``(N, n_classes)``,
    columns in the order of the metadata's ``classes``. A model whose space joins several
    networks (backbones, cut points, flip-averaged parts) is one graph too: one input per
    distinct crop geometry (``pixels``, ``pixels_1``...; the metadata's ``inputs`` give each
    one's preprocessing and the parts that take it), each part's network, the flip
    averaging, the per-part L2 scaling and concatenation, then the head (see
    :mod:`deepfeat.export.graph`).

The metadata
    The file's ``metadata_props`` hold one JSON document under the key ``deepfeat``:
    classes, preprocessing, feature recipe, training summary, dates and versions, so the
    file is self-describing (``deepfeat serve --runtime onnx`` needs nothing else).

The check
    After writing, onnxruntime runs the file on random crops and its probabilities are
    compared with the torch graph's; the largest absolute difference is reported and a
    difference above :data:`CHECK_TOLERANCE` fails the export.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from deepfeat import __version__
from deepfeat.classify.spaces import join_parts
from deepfeat.exceptions import InputError
from deepfeat.export.graph import ImageToProba, PartEmbedding
from deepfeat.export.head import ExportRefused, head_module
from deepfeat.jsonable import plain
from deepfeat.process_state import ignoring_warnings

__all__ = ["export_onnx", "CHECK_TOLERANCE", "FORMATS", "metadata_of"]

log = logging.getLogger(__name__)

FORMATS = ("onnx",)
#: Largest absolute probability difference between onnxruntime and torch allowed at export.
CHECK_TOLERANCE = 1e-3
METADATA_KEY = "deepfeat"  # also deepfeat.serve.predictors.ONNX_METADATA_KEY


def _check_head_matches(model: Any, head: torch.nn.Module, emb: np.ndarray) -> float:
    """Largest relative difference of the torch head's decision values vs scikit-learn's.

    Decision values, not probabilities: probabilities saturate at 0 and 1, where a wrong
    weight can hide.
    """
    want = np.asarray(model.search_.decision_function(emb), dtype=np.float64).reshape(len(emb), -1)
    with torch.no_grad():
        got = head[:-1](torch.from_numpy(emb)).double().numpy()
    return float((np.abs(got - want) / (1.0 + np.abs(want))).max())


def _metadata(model: Any, info: dict[str, Any]) -> dict[str, Any]:
    spec = model.featurizer_spec_
    return {
        "format": "deepfeat-onnx",
        "format_version": 2,
        "classes": [plain(c) for c in model.classes_],
        "preprocess": spec["preprocess"],
        "input": "uint8 (N, 3, H, W) RGB crop: shorter side resized to preprocess.resize, centre crop preprocess.crop",
        "output": "float32 (N, n_classes) class probabilities, columns in classes order",
        "feature_recipe": {k: spec.get(k) for k in ("backbone", "weights_id", "layer", "pool", "preprocess")},
        "space": getattr(model, "space_", None),
        "cost": getattr(model, "cost_", None),
        "training": {
            "summary": model.describe(),
            "head": {k: plain(v) for k, v in model.best_params_.items()},
            "cv_score": float(model.best_score_) if np.isfinite(model.best_score_) else None,
            "n_images": int(model.featurize_summary_.get("total", 0)),
        },
        "created": info.get("created"),
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {**(info.get("versions") or {}), "deepfeat_export": __version__, "torch": torch.__version__},
    }


def metadata_of(path: str | os.PathLike) -> dict[str, Any]:
    """The deepfeat metadata of an exported ONNX file."""
    import onnx

    proto = onnx.load(os.fspath(path), load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise InputError(f"{path}: no deepfeat metadata in this ONNX file")


def input_names(n: int) -> list[str]:
    """Names of the graph's inputs: ``pixels``, then ``pixels_1``, ``pixels_2``..."""
    return ["pixels"] + [f"pixels_{k}" for k in range(1, n)]


def _part_names(model: Any, specs: list[dict[str, Any]]) -> list[str]:
    parts = getattr(model, "space_spec_", None)
    if parts and len(parts) == len(specs):
        from deepfeat.classify.spaces import space_name

        return [space_name(p) for p in parts]
    return [s["backbone"] for s in specs]


def _torch_export(graph: torch.nn.Module, example: tuple[torch.Tensor, ...], names: list[str], out: str,
                  opset: int) -> None:
    kw = dict(
        input_names=names,
        output_names=["probabilities"],
        opset_version=opset,
        dynamic_axes={**{n: {0: "batch"} for n in names}, "probabilities": {0: "batch"}},
    )
    with ignoring_warnings():  # the export runs in the caller's thread; torch warns about tracing
        try:
            torch.onnx.export(graph, example, out, dynamo=False, **kw)
        except TypeError:  # a torch without the dynamo switch
            torch.onnx.export(graph, example, out, **kw)


def export_onnx(
    model: Any,
    out: str | os.PathLike,
    *,
    info: dict[str, Any] | None = None,
    opset: int = 17,
    check: bool = True,
) -> dict[str, Any]:
    """Write ``model`` (a fitted TransferClassifier) as one ONNX graph; see the module docstring.

    Parameters
    ----------
    model : TransferClassifier
    out : path
        The ``.onnx`` file to write (atomically).
    info : dict or None
        ``created`` and ``versions`` of the model file (``load(..., return_info=True)``).
    opset : int, default=17
    check : bool, default=True
        Run the written file with onnxruntime and compare with torch.

    Returns
    -------
    dict
        ``out``, ``classes``, ``input`` shape, ``bytes``, ``head_max_abs_diff`` (torch head vs
        scikit-learn) and, with ``check``, ``onnx_max_abs_diff`` (onnxruntime vs torch).

    Raises
    ------
    ExportRefused
        A head that cannot be expressed (named in the message).
    """
    import onnx

    from deepfeat.featurize import Featurizer

    if not hasattr(model, "search_") or not hasattr(model, "featurizer_spec_"):
        raise InputError(
            f"export needs a fitted image classifier saved by `deepfeat fit`, got {type(model).__name__}"
        )
    if getattr(model, "_modality", lambda: "image")() == "text":
        raise InputError(
            "ONNX export covers image models only: a text model is served by `deepfeat serve MODEL` "
            "(torch and transformers)"
        )
    out = os.fspath(out)
    if not out.lower().endswith(".onnx"):
        raise InputError(f"--out {out}: an ONNX file name ends in .onnx")
    from deepfeat.classify.space_embedders import embedder_parts
    from deepfeat.featurize.preprocess import input_groups

    n_classes = len(model.classes_)
    head = head_module(model.search_.best_estimator_, n_classes)
    specs = [p.featurizer_spec_ for p in embedder_parts(model.embedder_)] if hasattr(model, "embedder_") \
        else [model.featurizer_spec_]
    feats = [Featurizer.from_spec(s, device="cpu", precision="fp32", cache=None, num_workers=0, jit=False,
                                  channels_last=False) for s in specs]
    inputs, index = input_groups([f.preprocess.to_dict() for f in feats])
    crops = [_smooth_crops(*(int(v) for v in p["crop"])) for p in inputs]
    part_norm = getattr(model, "part_norm_", None)
    parts = [PartEmbedding(f.model.eval(), f.preprocess.mean, f.preprocess.std, f.tta) for f in feats]
    graph = ImageToProba(parts, head, inputs=index, part_norm=part_norm).eval()
    with torch.no_grad():
        emb = join_parts([f.embed_pixels(crops[i]) for f, i in zip(feats, index)], part_norm)
        # the graph's own embedding is the featurizers' (normalisation, flips, part scaling)
        graph_emb = graph.embed(*(torch.from_numpy(c) for c in crops))
        want_proba = graph.head(graph_emb).numpy()
        graph_emb = graph_emb.numpy()
    emb_diff = float(np.abs(graph_emb - emb).max())
    if emb_diff > 1e-3 * max(1.0, float(np.abs(emb).max())):
        raise ExportRefused(f"internal check failed: the graph's embedding differs from deepfeat's by {emb_diff:.2e}")
    head_diff = _check_head_matches(model, head, emb)
    if head_diff > 1e-4:
        raise ExportRefused(
            f"internal check failed: the exported head differs from scikit-learn's by {head_diff:.2e}"
        )
    names = input_names(len(inputs))
    gen = torch.Generator().manual_seed(0)
    example = tuple(torch.randint(0, 256, (2, 3, *(int(v) for v in p["crop"])), dtype=torch.uint8, generator=gen)
                    for p in inputs)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.tmp-{os.getpid()}")
    try:
        with torch.no_grad():
            _torch_export(graph, example, names, tmp, opset)
        proto = onnx.load(tmp)
        meta = _metadata(model, info or {})
        meta["inputs"] = [{"name": n, "preprocess": p, "parts": [space for space, i in zip(_part_names(model, specs), index) if i == k]}
                          for k, (n, p) in enumerate(zip(names, inputs))]
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta)
        proto.doc_string = f"deepfeat: {model.describe()}"
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        result = {
            "out": out,
            "classes": meta["classes"],
            "input": {"name": names[0], "dtype": "uint8", "shape": ["N", 3, *inputs[0]["crop"]]},
            "inputs": [{"name": n, "dtype": "uint8", "shape": ["N", 3, *p["crop"]]} for n, p in zip(names, inputs)],
            "parts": len(feats),
            "head_max_abs_diff": head_diff,
        }
        if check:
            result["onnx_max_abs_diff"] = _check_runtime(want_proba, tmp, dict(zip(names, crops)))
            if result["onnx_max_abs_diff"] > CHECK_TOLERANCE:
                raise ExportRefused(
                    f"onnxruntime's probabilities differ from torch's by {result['onnx_max_abs_diff']:.2e} "
                    f"(> {CHECK_TOLERANCE}); the file was not written"
                )
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    result["bytes"] = os.path.getsize(out)
    return result


def _smooth_crops(h: int, w: int, n: int = 4) -> np.ndarray:
    """``n`` smooth random uint8 crops (white noise sits far from any photo a head has seen)."""
    rng = np.random.default_rng(1)
    base = torch.from_numpy(rng.integers(0, 256, size=(n, 3, 6, 6)).astype(np.float32))
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def _check_runtime(want: np.ndarray, path: str, crops: dict[str, np.ndarray]) -> float:
    """Largest absolute difference of onnxruntime's probabilities from ``want`` (torch's)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("checking the export needs onnxruntime: pip install 'deepfeat[onnx]'") from None
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, crops)[0]
    return float(np.abs(got - want).max())


__all__ += ["ExportRefused"]
