"""The exported network: uint8 image crops in, class probabilities out.

A model's space may join several parts (backbones or cut points, some flip-averaged),
whose networks take crops of different sizes: the graph then takes one uint8 input per
distinct input geometry, runs each part on its input (the mean of the image's and its
mirror's embeddings for a flip-averaged part), scales each part's rows to unit length
(as :func:`~deepfeat.classify.spaces.join_parts` does), joins them and applies the head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["PartEmbedding", "ImageToProba"]


class PartEmbedding(torch.nn.Module):
    """``uint8 (N, 3, H, W)`` crops -> ``(x / 255 - mean) / std`` -> backbone [-> flip mean].

    Parameters
    ----------
    backbone : torch.nn.Module
        The truncated backbone (float input, embeddings out; or uint8 input where its first
        convolution absorbed the normalisation: attribute ``takes_raw_pixels``).
    mean, std : sequence of float
        The backbone's per-channel normalisation.
    tta : {"none", "flip"}, default="none"
        ``"flip"``: the mean of the embeddings of the crop and of its horizontal mirror,
        as :meth:`Featurizer.embed_pixels <deepfeat.featurize.Featurizer.embed_pixels>`.
    """

    def __init__(self, backbone: torch.nn.Module, mean, std, tta: str = "none") -> None:  # noqa: ANN001
        super().__init__()
        self.backbone = backbone
        self.flip = tta == "flip"
        std64 = torch.tensor(std, dtype=torch.float64)
        # the same multiply-add as Preprocess.normalize
        self.register_buffer("scale", (1.0 / (255.0 * std64)).float().view(1, 3, 1, 1))
        self.register_buffer("shift", (-torch.tensor(mean, dtype=torch.float64) / std64).float().view(1, 3, 1, 1))

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        if getattr(self.backbone, "takes_raw_pixels", False):
            # the first convolution absorbed the normalisation (featurize.surgery's
            # fold_input_normalization): it takes the pixels as they are
            return self.backbone(pixels).float()
        return self.backbone(pixels.to(torch.float32) * self.scale + self.shift).float()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if not self.flip:
            return self._embed(pixels)
        # the image and its mirror in one batch: one copy of the network in the graph
        n = pixels.shape[0]
        both = self._embed(torch.cat([pixels, torch.flip(pixels, dims=(3,))], dim=0))
        return (both[:n] + both[n:]) / 2


class ImageToProba(torch.nn.Module):
    """One uint8 input per input geometry -> each part's embedding -> joined -> head.

    Parameters
    ----------
    backbone : torch.nn.Module or sequence of PartEmbedding
        One truncated backbone (then ``mean`` and ``std`` are its normalisation), or the
        parts of a concatenated space.
    head : torch.nn.Module
        From :func:`~deepfeat.export.head.head_module`.
    mean, std : sequence of float or None
        Normalisation of a single ``backbone``.
    inputs : sequence of int or None
        Which input each part takes (``None``: all the first).
    part_norm : {"l2"} or None, default="l2"
        How each part's rows are scaled before they are joined (only with several parts).
    """

    def __init__(
        self,
        backbone: torch.nn.Module | Sequence[PartEmbedding],
        head: torch.nn.Module,
        mean=None,  # noqa: ANN001
        std=None,  # noqa: ANN001
        *,
        inputs: Sequence[int] | None = None,
        part_norm: str | None = "l2",
    ) -> None:
        super().__init__()
        if isinstance(backbone, torch.nn.Module):
            backbone = [PartEmbedding(backbone, mean, std)]
        self.parts = torch.nn.ModuleList(backbone)
        self.inputs = list(inputs) if inputs is not None else [0] * len(self.parts)
        self.part_norm = part_norm if len(self.parts) > 1 else None
        self.head = head

    def embed(self, *pixels: torch.Tensor) -> torch.Tensor:
        """The joined embedding (what the head takes)."""
        outs = [part(pixels[i]) for part, i in zip(self.parts, self.inputs)]
        if len(outs) == 1:
            return outs[0]
        if self.part_norm == "l2":
            outs = [o / torch.linalg.vector_norm(o, dim=1, keepdim=True).clamp_min(1e-12) for o in outs]
        return torch.cat(outs, dim=1)

    def forward(self, *pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(*pixels))
