"""The :class:`TextFeaturizer`: texts in, embeddings out, each unique text encoded once.

The text counterpart of :class:`~deepfeat.featurize.featurizer.Featurizer`: the same engine
(:mod:`deepfeat.featurize.engine`), result type and cache, with a text reader and a text
encoder. A row's key is the hash of the exact text (UTF-8), its space the fingerprint of
encoder, weights, cut point, pooling, window (max length) and resolved precision
(:func:`~deepfeat.featurize.identity.fingerprint`).

Only the texts the cache lacks are tokenized and encoded: sorted by token length, cut
into batches padded to their own longest text (dynamic padding), run on every core (one
single-threaded stream per core, as for images) and written to the cache batch by batch,
so a killed run loses at most the batches in flight. Texts longer than the window are
truncated and counted (``summary["truncated"]``), never silently.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from deepfeat.exceptions import InvalidParameterError, WeightsUnavailableError
from deepfeat.featurize.backbones import ResolvedBackbone, resolve_backbone
from deepfeat.featurize.engine import FeaturizingEngine, check_engine_options, one_call_at_a_time
from deepfeat.featurize.local_batches import local_batches
from deepfeat.featurize.runtime import Runtime, resolve_runtime
from deepfeat.featurize.text_encoder import LAST, TextEncoder
from deepfeat.featurize.text_encoders import (
    DEFAULT_TEXT_BACKBONE,
    TFIDF,
    TextEncoderNet,
    normalize_text_pool,
)
from deepfeat.featurize.text_reader import TextReader, describe_text, text_key, text_problem

__all__ = ["TextFeaturizer", "describe_text", "text_key", "text_problem"]


class TextFeaturizer(FeaturizingEngine):
    """Turn texts into embeddings with a (cut) transformer encoder, cached in HDF5.

    The featurizing engine (:class:`~deepfeat.featurize.engine.FeaturizingEngine`) with a
    :class:`~deepfeat.featurize.text_reader.TextReader` (validation, tokenization) and a
    :class:`~deepfeat.featurize.text_encoder.TextEncoder` (the cut encoder, length-bucketed
    batches with dynamic padding).

    Parameters
    ----------
    backbone : str, default="minilm"
        A text encoder of the registry: ``"minilm"`` (offline default) or ``"hf:<repo>"``.
    layer : str or None, default=None
        Cut point (``"embeddings"``, ``"encoder.layer.<k>"``); ``None`` is the last layer.
    pool : {"mean", "cls"}, default="mean"
        Pooling of the token states (``"avg"`` is read as ``"mean"``).
    weights : str or None, default="DEFAULT"
        Pretrained weights, or ``None`` for random (seeded) weights.
    checkpoint : str or None, default=None
        Local state-dict file of the encoder.
    max_length : int or None, default=None
        Window in tokens; ``None`` is the encoder's (256 for ``minilm``). Part of the
        feature space.
    cache : str, path-like or None, default=None
    device : {"auto", "cpu", "cuda", "mps"}, default="auto"
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        ``auto`` uses bf16 only where the CPU computes it natively (part of the space).
    batch_size : int, default=32
        Texts per forward pass (after sorting by length).
    storage_dtype : {"float32", "float16"}, default="float32"
    lock_timeout : float or None, default=30
    progress : bool, default=False
    engine : {"local", "ray"}, default="local"
        ``ray`` encodes the texts the cache lacks on a Ray cluster, as for images (see
        :mod:`deepfeat.featurize.ray_engine`); needs ``deepfeat[ray]``.
    ray_address : str or None, default=None
        Cluster to join with ``engine="ray"``; ``None`` starts a local Ray.

    Attributes
    ----------
    forward_passes : int
        Texts sent through the encoder by this object so far.
    fingerprint : str
        Name of the feature space in the cache.
    reader : TextReader
        Keys, problems and token ids of the texts.
    encoder : TextEncoder
        The cut encoder on its runtime.

    Examples
    --------
    >>> f = TextFeaturizer(device="cpu", precision="fp32")
    >>> res = f.featurize(["a fine day", "   "])
    >>> res.features.shape, res.ok.tolist(), res.failures[0]["reason"]
    ((2, 384), [True, False], 'whitespace-only text')
    """

    modality = "text"

    def __init__(
        self,
        backbone: str = DEFAULT_TEXT_BACKBONE,
        *,
        layer: str | None = None,
        pool: str = "mean",
        weights: str | None = "DEFAULT",
        checkpoint: str | None = None,
        max_length: int | None = None,
        cache: str | os.PathLike | None = None,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 32,
        storage_dtype: str = "float32",
        lock_timeout: float | None = 30.0,
        progress: bool = False,
        engine: str = "local",
        ray_address: str | None = None,
    ) -> None:
        check_engine_options(batch_size=batch_size, storage_dtype=storage_dtype, engine=engine)
        if backbone == TFIDF:
            raise InvalidParameterError("'tfidf' is fitted on texts, not a frozen encoder: use TextEmbedder")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
            raise InvalidParameterError(f"max_length must be an integer >= 2 or None, got {max_length!r}")
        self.resolved: ResolvedBackbone = resolve_backbone(backbone, weights=weights, checkpoint=checkpoint)
        if self.resolved.modality != "text":
            raise InvalidParameterError(
                f"backbone {backbone!r} reads images, not texts: use a text encoder such as "
                f"{DEFAULT_TEXT_BACKBONE!r} (or featurize images with Featurizer)"
            )
        self.backbone = backbone
        self.layer = None if layer in (None, "", "penultimate") else layer
        self.pool = normalize_text_pool(pool)
        self.weights = weights
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.max_length = int(max_length or self.resolved.preprocess.max_length)
        self.runtime: Runtime = resolve_runtime(device, precision, False)
        self.reader = TextReader(self.resolved.preprocess, self.max_length)
        self.encoder = TextEncoder(self.resolved, self.runtime, layer=self.layer, pool=self.pool,
                                   max_length=self.max_length, name=backbone, weights=weights)
        self._start_engine(cache=cache, batch_size=batch_size, storage_dtype=storage_dtype,
                           lock_timeout=lock_timeout, progress=progress, engine=engine, ray_address=ray_address)

    # ------------------------------------------------------------------ identity
    @property
    def preprocess(self) -> dict[str, Any]:
        return self.encoder.preprocess

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-able description of the feature space; enough to rebuild this featurizer."""
        return {
            "modality": "text",
            "backbone": self.backbone,
            "weights": self.weights,
            "checkpoint": self.checkpoint,
            "weights_id": self.resolved.weights_id,
            "layer": self.layer or LAST,
            "pool": self.pool,
            "max_length": self.max_length,
            "preprocess": self.preprocess,
            "precision": self.runtime.precision,
            "storage_dtype": self.storage_dtype,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **overrides: Any) -> TextFeaturizer:
        """Rebuild a featurizer from :attr:`spec`; runtime settings may be overridden."""
        keys = ("backbone", "weights", "checkpoint", "layer", "pool", "max_length", "storage_dtype")
        kw = {k: spec[k] for k in keys if k in spec}
        if kw.get("layer") == LAST:
            kw["layer"] = None
        kw.update({k: v for k, v in overrides.items() if k in _RUNTIME})
        f = cls(**kw)
        want = spec.get("weights_id")
        if want and want != f.resolved.weights_id:
            raise WeightsUnavailableError(
                f"text encoder {f.backbone!r} resolves to weights {f.resolved.weights_id!r}, but the saved "
                f"model was trained on features of {want!r}; install the matching encoder"
            )
        return f

    def __repr__(self) -> str:
        return (f"TextFeaturizer({self.backbone!r}, layer={self.layer or LAST!r}, pool={self.pool!r}, "
                f"max_length={self.max_length}, {self.runtime.describe()})")

    # ------------------------------------------------------------------ model
    @property
    def tokenizer(self) -> Any:
        return self.reader.tokenizer

    @property
    def model(self) -> TextEncoderNet:
        """The cut, pooled encoder on its device (built on first access)."""
        return self.encoder.model

    @one_call_at_a_time
    def prepare(self, n_texts: int | None = None) -> None:
        """Build the encoder and load the tokenizer now (keeps the build out of a timed run)."""
        _ = self.reader.tokenizer, self.encoder.network()

    @one_call_at_a_time
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` (all valid), nothing read from or written to the cache."""
        source = self.reader.open(list(texts))
        out = np.zeros((len(source), 0), np.float32)
        for g, _, feats in local_batches(source, self.encoder, self.batch_size):
            if out.shape[1] == 0:
                out = np.zeros((len(source), feats.shape[1]), np.float32)
            out[g] = feats.numpy()
        self.forward_passes += len(source)
        return out


_RUNTIME = ("cache", "device", "precision", "batch_size", "storage_dtype", "lock_timeout", "progress")
