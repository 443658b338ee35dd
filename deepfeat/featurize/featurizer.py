"""The :class:`Featurizer`: images in, embeddings out, each unique image computed once.

A run has two phases (:mod:`deepfeat.featurize.engine`). First every input is hashed (file
bytes or pixels) and looked up in the cache; duplicates are merged together. Then only the
missing images are decoded and resized (:mod:`~deepfeat.featurize.image_reader`),
normalised and pushed through the truncated backbone
(:mod:`~deepfeat.featurize.image_encoder`) in batches, and each batch is appended to the
cache before the next one starts, so a killed run loses at most the batch in flight.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from deepfeat.exceptions import InvalidParameterError, WeightsUnavailableError
from deepfeat.featurize.backbones import DEFAULT_BACKBONE, ResolvedBackbone, resolve_backbone
from deepfeat.featurize.decode import DEFAULT_MAX_PIXELS
from deepfeat.featurize.engine import (
    FeaturizeResult,
    FeaturizingEngine,
    check_engine_options,
    one_call_at_a_time,
)
from deepfeat.featurize.identity import TTA_CHOICES
from deepfeat.featurize.image_encoder import JIT_MIN_IMAGES, ImageEncoder
from deepfeat.featurize.image_reader import ImageReader
from deepfeat.featurize.runtime import Runtime, resolve_runtime
from deepfeat.featurize.truncate import PENULTIMATE, POOLINGS

__all__ = ["JIT_MIN_IMAGES", "Featurizer", "FeaturizeResult"]

JIT_CHOICES = ("auto", True, False)


class Featurizer(FeaturizingEngine):
    """Turn images into embeddings with a truncated pretrained backbone, cached in HDF5.

    The featurizing engine (:class:`~deepfeat.featurize.engine.FeaturizingEngine`) with an
    :class:`~deepfeat.featurize.image_reader.ImageReader` (decode, resize, crop) and an
    :class:`~deepfeat.featurize.image_encoder.ImageEncoder` (the cut backbone). The backbone
    is resolved at construction (cheap: name, weights id, preprocessing) and built on first
    use; nothing is built at all when every input is already cached.

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        Registry name: ``"efficientnet_lite0"`` (offline default), ``"efficientnet_lite1"``
        or ``"efficientnet_lite2"`` (the rest of the offline zoo), ``"torchvision:<arch>"``
        or ``"timm:<arch>"``. See ``deepfeat backbones``.
    layer : str or None, default=None
        Graph node to cut at; ``None`` is the penultimate, globally pooled embedding.
    pool : {"avg", "max", "gem", "avgmax"}, default="avg"
        Spatial pooling for a named layer.
    weights : str or None, default="DEFAULT"
        Pretrained weights (``"DEFAULT"`` or a named variant) or ``None`` for random,
        seeded weights.
    checkpoint : str or None, default=None
        Local state-dict file to load instead of downloading weights.
    cache : str, path-like or None, default=None
        HDF5 cache file. ``None`` keeps nothing between calls.
    device : {"auto", "cpu", "cuda", "mps"}, default="auto"
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        ``auto`` uses bf16/fp16 only where the hardware runs it natively.
    channels_last : bool or "auto", default="auto"
        NHWC layout; ``auto`` uses it on CPU and CUDA (faster there), not on MPS.
    jit : bool or "auto", default="auto"
        On a CPU, run a traced, frozen TorchScript copy of the network whose layers oneDNN
        fuses (checked against the eager network before use; see
        :func:`~deepfeat.featurize.surgery.trace_for_cpu`). ``auto`` does it for jobs of
        at least :data:`JIT_MIN_IMAGES` images, where the ~2 s it takes to build pays
        off; ``True`` always, ``False`` never. Ignored on GPUs.
    batch_size : int, default=32
        Images decoded, embedded and written to the cache together.
    num_workers : int or "auto", default="auto"
        ``auto`` on a CPU runs one stream per core, each decoding whole batches and
        running their forward pass single-threaded (no intra-op barriers; the fastest
        setting measured on a shared 2-core machine); on a GPU, decoding processes
        (``min(8, cores)``) feed the device. An integer asks for that many decoding
        processes with the forward pass in the calling thread; ``0`` decodes in the
        calling process.
    tta : {"none", "flip"}, default="none"
        Test-time augmentation: ``"flip"`` embeds each image and its horizontal mirror
        and averages the two embeddings (two forward passes per image). Its own feature
        space in the cache.
    storage_dtype : {"float32", "float16"}, default="float32"
        Dtype of the rows a *new* space stores in the cache (returned values are always
        float32). Not part of the space's identity: rows of an existing space are found
        whatever dtype is asked for, and new rows take the dtype the space already has.
    max_pixels : int
        Decompression-bomb limit per image.
    lock_timeout : float or None, default=30
        Seconds to wait for another process writing the same cache.
    progress : bool, default=False
        Show a tqdm bar on stderr (only when stderr is a terminal).
    engine : {"local", "ray"}, default="local"
        ``ray`` embeds the images that the cache lacks on a Ray cluster (Ray Data, one
        model per actor; see :mod:`deepfeat.featurize.ray_engine`). Needs ``deepfeat[ray]``.
    ray_address : str or None, default=None
        Cluster to join with ``engine="ray"``; ``None`` starts a local Ray with 2 CPUs.

    Attributes
    ----------
    forward_passes : int
        Images sent through the network by this object so far.
    fingerprint : str
        Name of the feature space in the cache (see :mod:`deepfeat.featurize.identity`:
        backbone, weights, layer, pooling, preprocessing, resolved precision, TTA).
    reader : ImageReader
        Keys and decoded pixels of the inputs.
    encoder : ImageEncoder
        The cut backbone on its runtime (:attr:`ImageEncoder.traced` once traced for the CPU).

    Examples
    --------
    >>> import numpy as np
    >>> f = Featurizer(device="cpu", precision="fp32")
    >>> res = f.featurize([np.zeros((32, 32, 3), np.uint8)])
    >>> res.features.shape, res.summary["featurized"]
    ((1, 1280), 1)
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        *,
        layer: str | None = None,
        pool: str = "avg",
        weights: str | None = "DEFAULT",
        checkpoint: str | None = None,
        cache: str | os.PathLike | None = None,
        device: str = "auto",
        precision: str = "auto",
        channels_last: bool | str = "auto",
        jit: bool | str = "auto",
        batch_size: int = 32,
        num_workers: int | str = "auto",
        tta: str = "none",
        storage_dtype: str = "float32",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        lock_timeout: float | None = 30.0,
        progress: bool = False,
        engine: str = "local",
        ray_address: str | None = None,
    ) -> None:
        if pool not in POOLINGS:
            raise InvalidParameterError(f"pool must be one of {POOLINGS}, got {pool!r}")
        if layer in (None, "", PENULTIMATE) and pool != "avg":
            raise InvalidParameterError(
                f"pool={pool!r} needs a named layer: the penultimate embedding uses the model's own pooling"
            )
        if not (isinstance(jit, bool) or jit == "auto"):
            raise InvalidParameterError(f"jit must be one of {JIT_CHOICES}, got {jit!r}")
        if tta not in TTA_CHOICES:
            raise InvalidParameterError(f"tta must be one of {TTA_CHOICES}, got {tta!r}")
        check_engine_options(batch_size=batch_size, storage_dtype=storage_dtype, engine=engine)
        if num_workers != "auto" and (not isinstance(num_workers, int) or num_workers < 0):
            raise InvalidParameterError(f"num_workers must be 'auto' or an integer >= 0, got {num_workers!r}")
        self.backbone = backbone
        self.layer = None if layer in (None, "", PENULTIMATE) else layer
        self.pool = pool
        self.weights = weights
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.runtime: Runtime = resolve_runtime(device, precision, channels_last)
        self.jit = jit
        self.num_workers = num_workers
        self.tta = tta
        self.max_pixels = max_pixels
        self.resolved: ResolvedBackbone = resolve_backbone(backbone, weights=weights, checkpoint=self.checkpoint)
        self.reader = ImageReader(self.resolved.preprocess, max_pixels)
        self.encoder = ImageEncoder(self.resolved, self.runtime, layer=self.layer, pool=pool, tta=tta, jit=jit,
                                    name=backbone, weights=weights)
        self._start_engine(cache=cache, batch_size=batch_size, storage_dtype=storage_dtype,
                           lock_timeout=lock_timeout, progress=progress, engine=engine, ray_address=ray_address)

    # ------------------------------------------------------------------ identity
    @property
    def preprocess(self):  # noqa: ANN201 - Preprocess
        return self.resolved.preprocess

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-able description of the feature space; enough to rebuild this featurizer."""
        return {
            "backbone": self.backbone,
            "weights": self.weights,
            "checkpoint": self.checkpoint,
            **self.encoder.space_fields(),
            "storage_dtype": self.storage_dtype,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **overrides: Any) -> Featurizer:
        """Rebuild a featurizer from :attr:`spec`; runtime settings may be overridden.

        Raises
        ------
        WeightsUnavailableError
            When the backbone now resolves to different weights than recorded.
        """
        keys = ("backbone", "weights", "checkpoint", "layer", "pool", "tta", "storage_dtype")
        kw = {k: spec[k] for k in keys if k in spec}
        kw.update(overrides)
        f = cls(**kw)
        want = spec.get("weights_id")
        if want and want != f.resolved.weights_id and want not in f.resolved.legacy_weights_ids:
            raise WeightsUnavailableError(
                f"backbone {f.backbone!r} resolves to weights {f.resolved.weights_id!r}, but the saved "
                f"model was trained on features of {want!r}; supply the matching checkpoint"
            )
        return f

    def __repr__(self) -> str:
        layer = self.layer or PENULTIMATE
        return f"Featurizer({self.backbone!r}, layer={layer!r}, pool={self.pool!r}, {self.runtime.describe()})"

    # ------------------------------------------------------------------ model
    @property
    def model(self) -> torch.nn.Module:
        """The truncated backbone on its device (built on first access; see
        :attr:`ImageEncoder.model <deepfeat.featurize.image_encoder.ImageEncoder.model>`)."""
        return self.encoder.model

    @one_call_at_a_time
    def prepare(self, n_images: int | None = None) -> None:
        """Build the network now, as a job of ``n_images`` images would run it.

        Featurizing builds it on first use anyway; call this to keep the build out of a
        timed run. With ``jit="auto"`` the traced CPU network is built when ``n_images``
        reaches :data:`JIT_MIN_IMAGES` (``None``: only when ``jit=True``).
        """
        self.encoder.prepare(n_images)

    @one_call_at_a_time
    def embed_pixels(self, batch: Any) -> np.ndarray:
        """Embeddings of images already decoded, resized and cropped: a uint8 ``(N, 3, H, W)``
        batch as :meth:`Preprocess.geometry` makes it (what a server holds in memory).

        The same network, precision, normalisation and TTA as :meth:`featurize`; nothing is
        read from or written to the cache.

        Examples
        --------
        >>> import numpy as np
        >>> f = Featurizer("timm:test_resnet", weights=None, device="cpu", cache=None)
        >>> h, w = f.preprocess.crop
        >>> f.embed_pixels(np.zeros((2, 3, h, w), np.uint8)).shape[0]
        2
        """
        x = torch.as_tensor(np.asarray(batch))
        h, w = self.preprocess.crop
        if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != (3, h, w):
            raise InvalidParameterError(
                f"embed_pixels takes a uint8 (N, 3, {h}, {w}) batch, got {x.dtype} {tuple(x.shape)}"
            )
        with torch.inference_mode():
            return self.encoder.encode(x).numpy()
