"""Classify: scikit-learn heads on cached embeddings, searched for small data.

:class:`TransferClassifier` takes images (or texts) and labels; :class:`ImageEmbedder` and
:class:`TextEmbedder` are the images- and texts-to-embeddings transformers it composes
(and that your own pipelines may use); :class:`EmbeddingClassifier`
(built by :func:`build_search`) is the head search on embedding arrays.
"""

from deepfeat.extras import require

require("deepfeat.classify")  # one line naming the extra to install, not a traceback

from deepfeat.classify.calibration import TemperatureScaledClassifier
from deepfeat.classify.candidates import FULL_GRID, HEADS, PREPROCESSING_STEPS
from deepfeat.classify.cv import small_data_cv
from deepfeat.classify.data import load_xy
from deepfeat.classify.embedder import ImageEmbedder
from deepfeat.classify.metrics import evaluation_report, format_report
from deepfeat.classify.persistence import load, save
from deepfeat.classify.search import EmbeddingClassifier, build_search
from deepfeat.classify.text_embedder import TextEmbedder
from deepfeat.classify.transfer import TransferClassifier

__all__ = [
    "FULL_GRID",
    "HEADS",
    "PREPROCESSING_STEPS",
    "EmbeddingClassifier",
    "ImageEmbedder",
    "TemperatureScaledClassifier",
    "TextEmbedder",
    "TransferClassifier",
    "build_search",
    "evaluation_report",
    "format_report",
    "load",
    "load_xy",
    "save",
    "small_data_cv",
]
