"""The exported network: uint8 image crops in, class probabilities out."""

from __future__ import annotations

import torch

__all__ = ["ImageToProba"]


class ImageToProba(torch.nn.Module):
    """``uint8 (N, 3, H, W)`` RGB crops -> ``(x / 255 - mean) / std`` -> backbone -> head.

    Parameters
    ----------
    backbone : torch.nn.Module
        The truncated backbone (float input, embeddings out).
    head : torch.nn.Module
        From :func:`~deepfeat.export.head.head_module`.
    mean, std : sequence of float
        The backbone's per-channel normalisation.
    """

    def __init__(self, backbone: torch.nn.Module, head: torch.nn.Module, mean, std) -> None:  # noqa: ANN001
        super().__init__()
        self.backbone = backbone
        self.head = head
        std64 = torch.tensor(std, dtype=torch.float64)
        # the same multiply-add as Preprocess.normalize
        self.register_buffer("scale", (1.0 / (255.0 * std64)).float().view(1, 3, 1, 1))
        self.register_buffer("shift", (-torch.tensor(mean, dtype=torch.float64) / std64).float().view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if getattr(self.backbone, "takes_raw_pixels", False):
            # the first convolution absorbed the normalisation (featurize.runtime's
            # fold_input_normalization): it takes the pixels as they are
            return self.head(self.backbone(pixels).float())
        x = pixels.to(torch.float32) * self.scale + self.shift
        return self.head(self.backbone(x).float())
