"""Classify: scikit-learn heads on cached embeddings, searched for small data.

:class:`TransferClassifier` takes images and labels; :class:`ImageEmbedder` is the
images-to-embeddings transformer for your own pipelines; :class:`EmbeddingClassifier`
(built by :func:`build_search`) is the head search on embedding arrays.
"""

from deepfeat.extras import require

require("deepfeat.classify")  # one line naming the extra to install, not a traceback

from deepfeat.classify.calibration import TemperatureScaledClassifier
from deepfeat.classify.candidates import DEFAULT_GRID, HEADS, PREPROCESSING_STEPS
from deepfeat.classify.cv import small_data_cv
from deepfeat.classify.data import load_xy
from deepfeat.classify.embedder import ImageEmbedder
from deepfeat.classify.metrics import evaluation_report, format_report
from deepfeat.classify.persistence import load, save
from deepfeat.classify.search import EmbeddingClassifier, build_search
from deepfeat.classify.transfer import TransferClassifier

__all__ = [
    "DEFAULT_GRID",
    "HEADS",
    "PREPROCESSING_STEPS",
    "EmbeddingClassifier",
    "ImageEmbedder",
    "TemperatureScaledClassifier",
    "TransferClassifier",
    "build_search",
    "evaluation_report",
    "format_report",
    "load",
    "load_xy",
    "save",
    "small_data_cv",
]
