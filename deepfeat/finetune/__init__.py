"""Fine-tuning, the second transfer strategy: train the pretrained backbone on the new images.

The room sits on top of :mod:`deepfeat.featurize` and :mod:`deepfeat.classify` (it builds
backbones through the registry and ends in a :class:`~deepfeat.classify.TransferClassifier`
on the fine-tuned checkpoint); nothing below imports it.
"""

from deepfeat.extras import require

require("deepfeat.finetune")  # one line naming the extra to install, not a traceback

from deepfeat.finetune.estimator import FineTuneClassifier, default_work_dir
from deepfeat.finetune.recipe import RECIPE_FIELDS, Recipe
from deepfeat.finetune.train import TrainResult, fine_tune

__all__ = ["FineTuneClassifier", "Recipe", "RECIPE_FIELDS", "TrainResult", "default_work_dir", "fine_tune"]
