"""Serving a text model: the ``{"texts": [...]}`` request body and the :class:`TextPredictor`.

``POST /predict`` on a text model takes JSON ``{"texts": ["...", ...]}``. Each text is
checked on its own (a non-string, an empty or whitespace-only text is a 400 *for that
item*, the others are answered); the request as a whole is refused only when its body is
not such an object, or holds more texts than ``limits.max_files``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepfeat.jsonable import plain
from deepfeat.serve.results import prediction_rows
from deepfeat.serve.uploads import RequestRefused

__all__ = ["TextItem", "TextPredictor", "read_texts_request"]


@dataclass
class TextItem:
    """One text of a request: the text, or why it cannot be classified."""

    name: str
    text: str | None
    error: str = ""


def read_texts_request(body: bytes, content_type: str, max_items: int) -> list[TextItem]:
    """The texts of a ``POST /predict`` body for a text model.

    Raises
    ------
    RequestRefused
        415 for another content type, 400 for a body that is not ``{"texts": [...]}``, 413
        for more than ``max_items`` texts.
    """
    if content_type != "application/json":
        raise RequestRefused(415, f"content type {content_type or '(none)'!r} not accepted: this is a text "
                                  f"model; send application/json {{\"texts\": [\"...\"]}}")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRefused(400, f"the body is not valid JSON: {exc}") from None
    texts = doc.get("texts") if isinstance(doc, dict) else None
    if not isinstance(texts, list):
        raise RequestRefused(400, 'expected a JSON object {"texts": ["...", ...]} (a list of strings)')
    if not texts:
        raise RequestRefused(400, "no texts given: the list is empty")
    if len(texts) > max_items:
        raise RequestRefused(413, f"{len(texts)} texts in one request, at most {max_items}")
    from deepfeat.featurize.text_featurizer import text_problem

    items = []
    for i, t in enumerate(texts):
        why = text_problem(t)
        items.append(TextItem(f"text {i}", None if why else t, why))
    return items


class TextPredictor:
    """A text model saved by ``deepfeat fit`` (a TransferClassifier on a text encoder).

    Each part of the model's space embeds the texts without the cache (the encoders
    through :meth:`TextFeaturizer.embed_texts
    <deepfeat.featurize.text_featurizer.TextFeaturizer.embed_texts>`, TF-IDF through the
    model's fitted vectorizer); the parts are joined as in fitting.
    """

    runtime = "torch"
    modality = "text"

    def __init__(self, model: Any, info: dict[str, Any], device: str = "cpu") -> None:
        from deepfeat.classify.space_embedders import embedder_parts
        from deepfeat.featurize.text_featurizer import TextFeaturizer

        self.model = model
        self.info = info
        self.parts: list[Any] = []
        for part in embedder_parts(model.embedder_):
            if getattr(part, "vectorizer_", None) is not None:
                self.parts.append(part.vectorizer_)
                continue
            spec = part.featurizer_spec_
            self.parts.append(TextFeaturizer.from_spec(spec, device=device, cache=None,
                                                       precision=spec.get("precision", "auto")))
        self.classes = [plain(c) for c in model.classes_]
        self.has_proba = hasattr(model.search_, "predict_proba")
        self.preprocess = {"max_length": next((p.max_length for p in self.parts if hasattr(p, "max_length")), None)}
        self.inputs: list[dict[str, Any]] = []

    def warm_up(self) -> None:
        self.predict(["warm up"])

    def embed(self, texts: Any) -> np.ndarray:
        from deepfeat.classify.spaces import join_parts

        texts = [str(t) for t in np.asarray(texts, dtype=object).ravel()]
        rows = [p.embed_texts(texts) if hasattr(p, "embed_texts") else p.transform(texts).toarray()
                for p in self.parts]
        return join_parts(rows, getattr(self.model, "part_norm_", None))

    def predict(self, texts: Any) -> list[dict[str, Any]]:
        """``{"label", "probabilities"}`` for each text."""
        emb = self.embed(texts)
        head = self.model.search_
        proba = head.predict_proba(emb) if self.has_proba else None
        return prediction_rows(self.classes, proba, head.predict(emb))

    def describe(self) -> dict[str, Any]:
        """What ``GET /model`` shows."""
        m = self.model
        spec = m.featurizer_spec_
        return {
            "runtime": self.runtime,
            "modality": "text",
            "classes": self.classes,
            "probabilities": self.has_proba,
            "feature_recipe": {k: spec.get(k) for k in ("backbone", "weights_id", "layer", "pool", "max_length")},
            "space": getattr(m, "space_", None),
            "cost": getattr(m, "cost_", None),
            "training": {
                "summary": m.describe(),
                "cv_score": float(m.best_score_),
                "n_texts": int(m.featurize_summary_.get("total", 0)),
                "n_empty": len(m.failures_),
            },
            "created": self.info.get("created"),
            "versions": self.info.get("versions"),
        }
