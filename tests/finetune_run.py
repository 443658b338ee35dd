"""The fine-tune that tests/test_finetune.py kills: imported by the test and by the child
process it kills, so that both run the same fit (not collected: no ``test_`` prefix)."""

from __future__ import annotations

import sys

import numpy as np

from deepfeat.classify import EmbeddingClassifier, ImageEmbedder, TransferClassifier
from deepfeat.finetune import FineTuneClassifier

BACKBONE = "timm:test_efficientnet"


def killable_fit(work: str) -> FineTuneClassifier:
    """3 epochs on 16 LFW images, saving its state in ``work`` after every epoch."""
    from skimage.data import lfw_subset

    X = (lfw_subset() * 255).astype(np.uint8)
    idx = list(range(8)) + list(range(100, 108))
    t = TransferClassifier(ImageEmbedder(BACKBONE, weights=None, device="cpu", precision="fp32",
                                         cache=work + "/c.h5"),
                           EmbeddingClassifier("logreg", preprocessing="standardize"), spaces=None)
    return FineTuneClassifier(t, epochs=3, lr=5e-3, freeze=0, val_fraction=0.25, patience=10,
                              batch_size=4, work_dir=work).fit([X[i] for i in idx], [0] * 8 + [1] * 8)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    killable_fit(sys.argv[1])
