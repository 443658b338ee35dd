"""What a prediction answers: one ``{"label", "probabilities"}`` per input, as JSON holds it.

Shared by the image predictors (:mod:`deepfeat.serve.predictors`) and the text predictor
(:mod:`deepfeat.serve.texts`); imports only numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepfeat.jsonable import plain

__all__ = ["prediction_rows"]


def prediction_rows(classes: list[Any], proba: np.ndarray | None, labels: np.ndarray) -> list[dict[str, Any]]:
    """One ``{"label", "probabilities"}`` per row; ``probabilities`` is None without ``proba``.

    Examples
    --------
    >>> prediction_rows(["a", "b"], np.array([[0.25, 0.75]]), np.array(["b"]))
    [{'label': 'b', 'probabilities': {'a': 0.25, 'b': 0.75}}]
    """
    out = []
    for i, label in enumerate(labels):
        probs = None
        if proba is not None:
            probs = {str(c): float(p) for c, p in zip(classes, proba[i])}
        out.append({"label": plain(label), "probabilities": probs})
    return out
