"""``deepfeat export --format onnx``: one ONNX graph from image crops to class probabilities.

The graph
    Input ``pixels``: **uint8**, shape ``(N, 3, H, W)``, RGB, ``H x W`` the backbone's crop
    size, already resized (shorter side to ``resize`` with the recorded interpolation) and
    centre-cropped -- what :func:`deepfeat.serve.pixels.to_model_input` makes from an image.
    The batch axis is dynamic. Output ``probabilities``: float32 ``(N, n_classes)``,
    columns in the order of the metadata's ``classes``.

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
from deepfeat.exceptions import InputError
from deepfeat.export.graph import ImageToProba
from deepfeat.export.head import ExportRefused, head_module
from deepfeat.process_state import ignoring_warnings

__all__ = ["export_onnx", "CHECK_TOLERANCE", "FORMATS", "metadata_of"]

log = logging.getLogger(__name__)

FORMATS = ("onnx",)
#: Largest absolute probability difference between onnxruntime and torch allowed at export.
CHECK_TOLERANCE = 1e-3
METADATA_KEY = "deepfeat"  # also deepfeat.serve.predictors.ONNX_METADATA_KEY


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


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
        "format_version": 1,
        "classes": [_plain(c) for c in model.classes_],
        "preprocess": spec["preprocess"],
        "input": "uint8 (N, 3, H, W) RGB crop: shorter side resized to preprocess.resize, centre crop preprocess.crop",
        "output": "float32 (N, n_classes) class probabilities, columns in classes order",
        "feature_recipe": {k: spec.get(k) for k in ("backbone", "weights_id", "layer", "pool", "preprocess")},
        "training": {
            "summary": model.describe(),
            "head": {k: _plain(v) for k, v in model.best_params_.items()},
            "cv_score": float(model.best_score_),
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


def _torch_export(graph: torch.nn.Module, example: torch.Tensor, out: str, opset: int) -> None:
    kw = dict(
        input_names=["pixels"],
        output_names=["probabilities"],
        opset_version=opset,
        dynamic_axes={"pixels": {0: "batch"}, "probabilities": {0: "batch"}},
    )
    with ignoring_warnings():
        try:
            torch.onnx.export(graph, (example,), out, dynamo=False, **kw)
        except TypeError:  # a torch without the dynamo switch
            torch.onnx.export(graph, (example,), out, **kw)


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
        A head or preprocessing step that cannot be expressed (named in the message).
    """
    import onnx

    from deepfeat.featurize import Featurizer

    if not hasattr(model, "search_") or not hasattr(model, "featurizer_spec_"):
        raise InputError(
            f"export needs a fitted image classifier saved by `deepfeat fit`, got {type(model).__name__}"
        )
    out = os.fspath(out)
    if not out.lower().endswith(".onnx"):
        raise InputError(f"--out {out}: an ONNX file name ends in .onnx")
    from deepfeat.classify.select_embed import embedder_parts

    parts = embedder_parts(model.embedder_) if hasattr(model, "embedder_") else []
    if len(parts) > 1:
        raise ExportRefused(
            f"the model's space {getattr(model, 'space_', '?')!r} concatenates {len(parts)} feature "
            f"spaces; ONNX export takes one space: fit with --select none (or --layers one layer)"
        )
    if model.featurizer_spec_.get("tta", "none") != "none":
        raise ExportRefused(
            f"the model's space uses test-time augmentation (tta={model.featurizer_spec_['tta']!r}); "
            f"ONNX export takes tta='none'"
        )
    n_classes = len(model.classes_)
    head = head_module(model.search_.best_estimator_, n_classes)
    f = Featurizer.from_spec(model.featurizer_spec_, device="cpu", precision="fp32", cache=None,
                             num_workers=0, jit=False, channels_last=False)
    backbone = f.model.eval()
    pre = f.preprocess
    h, w = pre.crop
    crops = _smooth_crops(h, w)
    with torch.no_grad():
        emb = f.embed_pixels(crops)
    head_diff = _check_head_matches(model, head, emb)
    if head_diff > 1e-4:
        raise ExportRefused(
            f"internal check failed: the exported head differs from scikit-learn's by {head_diff:.2e}"
        )
    graph = ImageToProba(backbone, head, pre.mean, pre.std).eval()
    example = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.tmp-{os.getpid()}")
    try:
        with torch.no_grad():
            _torch_export(graph, example, tmp, opset)
        proto = onnx.load(tmp)
        meta = _metadata(model, info or {})
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta)
        proto.doc_string = f"deepfeat: {model.describe()}"
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        result = {
            "out": out,
            "classes": meta["classes"],
            "input": {"name": "pixels", "dtype": "uint8", "shape": ["N", 3, h, w]},
            "head_max_abs_diff": head_diff,
        }
        if check:
            result["onnx_max_abs_diff"] = _check_runtime(graph, tmp, crops)
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


def _smooth_crops(h: int, w: int, n: int = 6) -> np.ndarray:
    """``n`` smooth random uint8 crops (white noise sits far from any photo a head has seen)."""
    rng = np.random.default_rng(1)
    base = torch.from_numpy(rng.integers(0, 256, size=(n, 3, 6, 6)).astype(np.float32))
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def _check_runtime(graph: torch.nn.Module, path: str, crops: np.ndarray) -> float:
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("checking the export needs onnxruntime: pip install 'deepfeat[onnx]'") from None
    with torch.no_grad():
        want = graph(torch.from_numpy(crops)).numpy()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"pixels": crops})[0]
    return float(np.abs(got - want).max())


__all__ += ["ExportRefused"]
