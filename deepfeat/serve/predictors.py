"""What the server runs: a saved deepfeat model (torch) or an exported ONNX file (onnxruntime).

Both take the same input, a uint8 batch ``(N, 3, H, W)`` already resized and centre-cropped
to the backbone's crop size (:meth:`prepare` makes it from a decoded image), and return one
``{"label", "probabilities"}`` per image. A model whose space joins networks with different
crop sizes takes one such batch per distinct crop geometry (``inputs``), as a tuple: an
upload is decoded once and each crop made once. :class:`OnnxPredictor` imports neither torch nor
scikit-learn: only onnxruntime, numpy and Pillow.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
from PIL import Image

from deepfeat.exceptions import InputError
from deepfeat.jsonable import plain
from deepfeat.serve.pixels import to_model_input
from deepfeat.serve.results import prediction_rows

__all__ = ["RUNTIMES", "TorchPredictor", "OnnxPredictor", "load_predictor", "ONNX_METADATA_KEY"]

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx")
#: Key of the JSON metadata ``deepfeat export`` writes into the ONNX file.
ONNX_METADATA_KEY = "deepfeat"


def _finite(value: Any) -> float | None:
    """A float JSON can hold: None for NaN (a score no cross-validation could measure)."""
    v = float(value)
    return v if np.isfinite(v) else None


def _stacked(batch: Any, n_inputs: int) -> list[np.ndarray]:
    """A batch as one contiguous uint8 array per input (a bare array is the only input)."""
    arrays = [batch] if isinstance(batch, np.ndarray) else list(batch)
    if len(arrays) != n_inputs:
        raise InputError(f"the model takes {n_inputs} input(s), got {len(arrays)}")
    return [np.ascontiguousarray(a, np.uint8) for a in arrays]


def _crop_of(pre: dict[str, Any]) -> tuple[int, int]:
    return int(pre["crop"][0]), int(pre["crop"][1])


class TorchPredictor:
    """A model saved by ``deepfeat fit`` (a fitted TransferClassifier), run with torch.

    Every space ``fit`` can choose is served: a concatenation's parts may take crops of
    different sizes (``inputs``: one per distinct geometry, see
    :func:`~deepfeat.featurize.preprocess.input_groups`); each part embeds its crop as
    featurizing does (:meth:`Featurizer.embed_pixels
    <deepfeat.featurize.Featurizer.embed_pixels>`, flip averaging included) and the parts
    are joined by :func:`~deepfeat.classify.spaces.join_parts`.

    Parameters
    ----------
    model : TransferClassifier
    info : dict
        ``created`` and ``versions`` from the model file.
    device : str, default="cpu"
    """

    runtime = "torch"

    def __init__(self, model: Any, info: dict[str, Any], device: str = "cpu") -> None:
        from deepfeat.classify.space_embedders import embedder_parts
        from deepfeat.featurize import Featurizer
        from deepfeat.featurize.preprocess import input_groups

        self.model = model
        self.info = info
        # one featurizer per part of the model's space (a concatenation has several), each at
        # the precision its space was computed in ("auto" may mean bf16 here, fp32 at fit time)
        self.featurizers = []
        for part in embedder_parts(model.embedder_):
            spec = part.featurizer_spec_
            self.featurizers.append(Featurizer.from_spec(
                spec, device=device, precision=spec.get("precision", getattr(model, "precision", "auto")),
                cache=None, num_workers=0, jit=False,
            ))
        self.featurizer = self.featurizers[0]
        #: the distinct input geometries, and which one each part takes
        self.inputs, self.part_inputs = input_groups([f.preprocess.to_dict() for f in self.featurizers])
        self._makers = [self.featurizers[self.part_inputs.index(i)].preprocess for i in range(len(self.inputs))]
        self.preprocess = self.featurizer.preprocess.to_dict()
        self.classes = [plain(c) for c in model.classes_]
        self.has_proba = hasattr(model.search_, "predict_proba")

    @classmethod
    def from_file(cls, path: str, *, trusted: bool = False, device: str = "cpu") -> Any:
        """Load under deepfeat's trust rules (an untrusted pickle is refused); a text model
        gives a :class:`~deepfeat.serve.texts.TextPredictor`."""
        from deepfeat.classify.persistence import load
        from deepfeat.classify.transfer import TransferClassifier

        model, info = load(path, trusted=trusted, return_info=True)
        if not isinstance(model, TransferClassifier):
            raise InputError(
                f"{path} holds a {type(model).__name__}, not an image classifier; serving needs a "
                f"model saved by `deepfeat fit`"
            )
        if model._modality() == "text":
            from deepfeat.serve.texts import TextPredictor

            return TextPredictor(model, info, device=device)
        return cls(model, info, device=device)

    def warm_up(self) -> None:
        """Build the networks now (not on the first request)."""
        self.predict(tuple(np.zeros((1, 3, *_crop_of(p)), np.uint8) for p in self.inputs))

    def prepare(self, img: Image.Image) -> np.ndarray | tuple[np.ndarray, ...]:
        """The uint8 ``(3, H, W)`` crop of a decoded RGB image, exactly as featurizing makes
        it; a tuple of crops, one per input, when the parts take different crops."""
        crops = tuple(p.geometry(img).numpy() for p in self._makers)
        return crops[0] if len(crops) == 1 else crops

    def embed(self, batch: np.ndarray | tuple[np.ndarray, ...]) -> np.ndarray:
        """Embeddings ``(N, D)`` of a uint8 ``(N, 3, H, W)`` batch, or of one such batch per
        input (normalised, then each part's network; the parts joined)."""
        from deepfeat.classify.spaces import join_parts

        arrays = _stacked(batch, len(self.inputs))
        return join_parts([f.embed_pixels(arrays[i]) for f, i in zip(self.featurizers, self.part_inputs)],
                          getattr(self.model, "part_norm_", None))

    def predict(self, batch: np.ndarray | tuple[np.ndarray, ...]) -> list[dict[str, Any]]:
        """``{"label", "probabilities"}`` for each image of a batch (see :meth:`embed`)."""
        emb = self.embed(batch)
        head = self.model.search_
        proba = head.predict_proba(emb) if self.has_proba else None
        labels = head.predict(emb)
        return prediction_rows(self.classes, proba, labels)

    def describe(self) -> dict[str, Any]:
        """What ``GET /model`` shows: classes, feature recipe, training summary, dates."""
        m = self.model
        spec = m.featurizer_spec_
        return {
            "runtime": self.runtime,
            "classes": self.classes,
            "probabilities": self.has_proba,
            "feature_recipe": {k: spec.get(k) for k in ("backbone", "weights_id", "layer", "pool", "preprocess")},
            "space": getattr(m, "space_", None),
            "parts": [f.spec.get("backbone") for f in self.featurizers],
            "cost": getattr(m, "cost_", None),
            "training": {
                "summary": m.describe(),
                "head": {k: plain(v) for k, v in m.best_params_.items()},
                # None (JSON null) where no cross-validation was possible (1 label per class)
                "cv_score": _finite(m.best_score_),
                "cv_std": _finite(m.best_std_),
                "n_splits": int(m.n_splits_),
                "n_images": int(m.featurize_summary_.get("total", 0)),
                "n_unreadable": len(m.failures_),
            },
            "created": self.info.get("created"),
            "versions": self.info.get("versions"),
        }


class OnnxPredictor:
    """An ONNX file written by ``deepfeat export``, run with onnxruntime (no torch).

    Parameters
    ----------
    path : str
        The ``.onnx`` file; its deepfeat metadata supplies classes and preprocessing.
    """

    runtime = "onnx"

    def __init__(self, path: str) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError("--runtime onnx needs onnxruntime: pip install 'deepfeat[onnx]'") from None
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such ONNX file")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise InputError(f"{path}: not a readable ONNX file: {type(exc).__name__}: {exc}") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
        if raw is None:
            raise InputError(
                f"{path}: this ONNX file has no deepfeat metadata (write it with `deepfeat export`)"
            )
        self.meta = json.loads(raw)
        self.preprocess = self.meta["preprocess"]
        self.classes = list(self.meta["classes"])
        self.has_proba = True
        # one input per distinct crop geometry (files of format_version 1 have one)
        listed = self.meta.get("inputs") or [{"name": self.session.get_inputs()[0].name,
                                              "preprocess": self.preprocess}]
        self.input_names = [i["name"] for i in listed]
        self.inputs = [i["preprocess"] for i in listed]
        missing = set(self.input_names) - {i.name for i in self.session.get_inputs()}
        if missing:
            raise InputError(f"{path}: the metadata lists inputs {sorted(missing)} the graph lacks")

    @classmethod
    def from_file(cls, path: str) -> OnnxPredictor:
        """Open an ONNX file written by ``deepfeat export``."""
        return cls(path)

    def warm_up(self) -> None:
        """Run one batch now, so the first request does not pay for session set-up."""
        self.predict(tuple(np.zeros((1, 3, *_crop_of(p)), np.uint8) for p in self.inputs))

    def prepare(self, img: Image.Image) -> np.ndarray | tuple[np.ndarray, ...]:
        """The uint8 ``(3, H, W)`` crop, made with Pillow (see :mod:`deepfeat.serve.pixels`);
        a tuple of crops, one per input, for a graph with several inputs."""
        crops = tuple(to_model_input(img, p) for p in self.inputs)
        return crops[0] if len(crops) == 1 else crops

    def predict(self, batch: np.ndarray | tuple[np.ndarray, ...]) -> list[dict[str, Any]]:
        """``{"label", "probabilities"}`` for each image of a uint8 ``(N, 3, H, W)`` batch, or
        of one such batch per input."""
        arrays = _stacked(batch, len(self.inputs))
        proba = self.session.run(None, dict(zip(self.input_names, arrays)))[0]
        labels = np.asarray(self.classes, dtype=object)[np.argmax(proba, axis=1)]
        return prediction_rows(self.classes, proba, labels)

    def describe(self) -> dict[str, Any]:
        """What ``GET /model`` shows, from the file's deepfeat metadata."""
        m = self.meta
        return {
            "runtime": self.runtime,
            "classes": self.classes,
            "probabilities": True,
            "feature_recipe": m.get("feature_recipe"),
            "space": m.get("space"),
            "cost": m.get("cost"),
            "training": m.get("training"),
            "created": m.get("created"),
            "exported": m.get("exported"),
            "versions": m.get("versions"),
        }


def load_predictor(
    path: str | os.PathLike, *, runtime: str = "torch", trusted: bool = False, device: str = "cpu"
) -> TorchPredictor | OnnxPredictor:
    """Load what ``deepfeat serve`` serves.

    Parameters
    ----------
    path : path
        A model file from ``deepfeat fit`` (``runtime="torch"``) or an ONNX file from
        ``deepfeat export`` (``runtime="onnx"``).
    runtime : {"torch", "onnx"}, default="torch"
    trusted : bool, default=False
        Load a pickle this machine did not write (see :mod:`deepfeat.classify.persistence`).
    device : str, default="cpu"
        Torch device (``runtime="torch"`` only).
    """
    path = os.fspath(path)
    if runtime not in RUNTIMES:
        raise InputError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    is_onnx = path.lower().endswith(".onnx")
    if runtime == "onnx":
        if not is_onnx:
            raise InputError(
                f"{path}: --runtime onnx serves a .onnx file; make one with "
                f"`deepfeat export {path} --format onnx --out model.onnx`"
            )
        return OnnxPredictor.from_file(path)
    if is_onnx:
        raise InputError(f"{path}: an ONNX file is served with --runtime onnx")
    return TorchPredictor.from_file(path, trusted=trusted, device=device)
