"""Small real sentences for the text tests (imported, not collected).

``tests/data/uci_sentiment_102.csv``: 102 sentences of the UCI sentiment set (see
tests/data/README.md), half positive, half negative, from Amazon, IMDb and Yelp reviews.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SENTIMENT_CSV = Path(__file__).parent / "data" / "uci_sentiment_102.csv"
#: Runtime settings of the text tests: CPU, fp32 (the same rows on every machine).
RUNTIME = {"device": "cpu", "precision": "fp32"}
#: A quick head search: logistic regression alone.
QUICK = {"heads": "logreg", "preprocessing": "standardize", "cv": 3}


def sentiment() -> tuple[np.ndarray, np.ndarray]:
    """The 102 sentences and their labels."""
    import pandas as pd

    df = pd.read_csv(SENTIMENT_CSV)
    return df["text"].to_numpy(dtype=object), df["label"].to_numpy(dtype=str)


def split() -> dict[str, np.ndarray]:
    """Two sentences in five to test (stratified by position: the file alternates sources)."""
    X, y = sentiment()
    test = np.arange(len(X)) % 5 < 2
    return {"X": X[~test], "y": y[~test], "X_test": X[test], "y_test": y[test]}


def text_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The feature cache the text test modules share (each sentence encoded once a session)."""
    d = tmp_path_factory.getbasetemp() / "text-cache"
    d.mkdir(exist_ok=True)
    return str(d / "features.h5")
