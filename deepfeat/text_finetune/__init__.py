"""The second strategy for text: contrastive fine-tuning of a sentence encoder (the SetFit idea).

:class:`ContrastiveTextClassifier` tunes the encoder on pairs made from the labelled texts
(same label: similar; different labels: dissimilar), then fits a logistic regression on
the tuned embeddings. The room sits beside :mod:`deepfeat.finetune` (the image
fine-tune); it imports only :mod:`deepfeat.featurize.hashing`, :mod:`deepfeat.process_state`, :mod:`deepfeat.training_state`,
:mod:`deepfeat.extras` and :mod:`deepfeat.exceptions`, and nothing below imports it.
"""

from deepfeat.extras import require

require("deepfeat.text_finetune")  # one line naming the extra to install, not a traceback

from deepfeat.text_finetune.encoder import SentenceEncoder, default_model_dir
from deepfeat.text_finetune.estimator import ContrastiveTextClassifier
from deepfeat.text_finetune.train import TrainResult, train_contrastive

__all__ = ["ContrastiveTextClassifier", "SentenceEncoder", "TrainResult", "default_model_dir",
           "train_contrastive"]
