"""The text encoder: a transformer cut after a layer, pooled, with length-bucketed dynamic padding.

It knows its feature space (the fingerprint of encoder, weights, cut point, pooling,
window and resolved precision) and turns token ids from the
:class:`~deepfeat.featurize.text_reader.TextReader` into float32 embeddings. The texts of
a job are sorted by token length and cut into batches, each padded to its own longest text
(dynamic padding): short texts never pay for a long one's padding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from deepfeat.featurize.backbones import ResolvedBackbone
from deepfeat.featurize.identity import fingerprint
from deepfeat.featurize.runtime import Runtime
from deepfeat.featurize.text_encoders import TextEncoderNet
from deepfeat.featurize.text_reader import TokenBatch
from deepfeat.store import FeatureCache

__all__ = ["LAST", "TextEncoder", "pad_ids"]

log = logging.getLogger(__name__)

#: The cut point of the whole encoder (its last layer), as the space records it.
LAST = "last"


def pad_ids(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded to the longest row, and the attention mask (both ``long``).

    Examples
    --------
    >>> ids, mask = pad_ids([[5, 6, 7], [8]], 0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


class TextEncoder:
    """A text encoder at a cut point: token ids in, pooled embeddings out.

    Parameters
    ----------
    resolved : ResolvedBackbone
        A text encoder of the backbone registry.
    runtime : Runtime
    layer : str or None
        Cut point (``"embeddings"``, ``"encoder.layer.<k>"``); ``None`` is the last layer.
    pool : {"mean", "cls"}
    max_length : int
        The window in tokens (part of the feature space).
    name : str
        The encoder as the user named it (for logs and the space's attributes).
    weights : str or None
        The weights as the user named them (for the space's attributes).
    """

    def __init__(self, resolved: ResolvedBackbone, runtime: Runtime, *, layer: str | None, pool: str,
                 max_length: int, name: str, weights: str | None) -> None:
        self.resolved = resolved
        self.runtime = runtime
        self.layer = layer
        self.pool = pool
        self.max_length = max_length
        self.name = name
        self.weights = weights
        self._model: TextEncoderNet | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    # ------------------------------------------------------------------ identity
    @property
    def preprocess(self) -> dict[str, Any]:
        return {**self.resolved.preprocess.to_dict(), "max_length": self.max_length}

    @property
    def fingerprint(self) -> str:
        return fingerprint(
            backbone=f"text:{self.resolved.family}:{self.resolved.arch}",
            weights_id=self.resolved.weights_id, layer=self.layer or LAST, pool=self.pool,
            preprocess=self.preprocess, precision=self.runtime.precision, tta="none",
        )

    def space_in(self, cache: FeatureCache | None) -> str:
        return self.fingerprint

    def space_attrs(self) -> dict[str, Any]:
        """What the cache records about a space this encoder creates."""
        import h5py
        import transformers

        from deepfeat import __version__

        return {
            "fingerprint": self.fingerprint, "modality": "text", "backbone": self.name,
            "weights": "none (random, seeded)" if self.weights is None else self.weights,
            "weights_id": self.resolved.weights_id, "layer": self.layer or LAST, "pool": self.pool,
            "preprocess": self.preprocess, "precision": self.runtime.precision, "tta": "none",
            "computed_with": self.runtime.describe(),
            "versions": {"deepfeat": __version__, "torch": torch.__version__,
                         "transformers": transformers.__version__, "h5py": h5py.__version__,
                         "numpy": np.__version__},
        }

    # ------------------------------------------------------------------ network
    @property
    def model(self) -> TextEncoderNet:
        """The cut, pooled encoder on its device (built on first access)."""
        if self._model is None:
            t0 = time.perf_counter()
            net = TextEncoderNet(self.resolved.build(), self.layer, self.pool)
            self._model = net.eval().to(self.runtime.device)
            log.info("built %s (%s) in %.1f s", self.name, self.layer or LAST, time.perf_counter() - t0)
        return self._model

    @property
    def built(self) -> bool:
        return self._model is not None

    def ready(self) -> bool:
        return self._model is not None

    def network(self) -> TextEncoderNet:
        return self.model

    def expect(self, n_texts: int | None) -> None:
        """Nothing to get ready for a job's size (no traced variant)."""

    def probe_dim(self) -> int:
        """Embedding width, from one forward pass of a one-token text."""
        return int(self.encode(TokenBatch([[0]], 0)).shape[1])

    # ------------------------------------------------------------------ encoding
    def plan(self, n: int, batch_size: int, sizes: list[int] | None = None) -> list[list[int]]:
        """Batches of texts of similar length: positions sorted by token length, cut in runs."""
        order = sorted(range(n), key=lambda i: sizes[i]) if sizes is not None else list(range(n))
        return [order[s : s + batch_size] for s in range(0, n, batch_size)]

    def encode(self, batch: TokenBatch) -> torch.Tensor:
        """Pooled embeddings of one batch padded to its longest text (float32, CPU)."""
        x, mask = pad_ids(batch.ids, batch.pad_id)
        dev = self.runtime.device
        with self.runtime.autocast():
            out = self.model(x.to(dev), mask.to(dev))
        return out.float().cpu()
