"""The :class:`Featurizer`: images in, embeddings out, each unique image computed once.

A run has two phases. First every input is hashed (file bytes or pixels) and looked up
in the cache; duplicates are folded together. Then only the missing images are decoded
and resized in DataLoader workers, normalised and pushed through the truncated backbone
in batches, and each batch is appended to the cache before the next one starts, so a
killed run loses at most the batch in flight.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from deepfeat.exceptions import (
    DeepfeatError,
    ImageDecodeError,
    InvalidParameterError,
    WeightsUnavailableError,
)
from deepfeat.featurize.backbones import DEFAULT_BACKBONE, ResolvedBackbone, resolve_backbone
from deepfeat.featurize.cache import FeatureCache
from deepfeat.featurize.decode import DEFAULT_MAX_PIXELS, decode_pixels, describe_source, read_bytes
from deepfeat.featurize.faults import kill_point
from deepfeat.featurize.hashing import hash_array, hash_bytes
from deepfeat.featurize.identity import (
    TTA_CHOICES,
    fingerprint,
    legacy_fingerprints,
    space_precision,
)
from deepfeat.featurize.runtime import (
    Runtime,
    cpu_count,
    fold_input_normalization,
    optimize_for_inference,
    resolve_runtime,
    trace_for_cpu,
)
from deepfeat.featurize.truncate import PENULTIMATE, POOLINGS, truncate
from deepfeat.process_state import keeping_signal_handler, torch_single_threaded

__all__ = ["Featurizer", "FeaturizeResult"]

log = logging.getLogger(__name__)

STORAGE_DTYPES = ("float32", "float16")
ENGINES = ("local", "ray")
#: Images per forward call on a CPU (a loader batch is split into slices of this size).
CPU_FORWARD_ROWS = 16
#: With ``jit="auto"``, jobs of at least this many images to featurize on a CPU run a
#: traced, oneDNN-fused copy of the network. Building it takes about 2 s; the faster
#: forward pass (1.4-2x here) repays that after roughly a thousand images.
JIT_MIN_IMAGES = 1000
JIT_CHOICES = ("auto", True, False)


@dataclass
class FeaturizeResult:
    """What a :meth:`Featurizer.featurize` call produced.

    Attributes
    ----------
    features : ndarray of shape (n_inputs, dim), float32
        Aligned with the inputs; rows of failed inputs are NaN. ``None`` when the call
        asked for ``return_features=False``.
    ok : ndarray of bool, shape (n_inputs,)
    keys : list of str or None
        Content hash of each input (``None`` when it could not be read).
    failures : list of dict
        ``{"index", "path", "reason"}`` for each failed input.
    summary : dict
        Counts ``total``, ``featurized`` (forward passes), ``cached`` (found in the
        cache), ``deduplicated`` (inputs whose content appeared earlier in the same
        call), ``failed``; ``seconds``, ``images_per_second`` (featurized images per
        second of decode + forward + write), ``device``, ``precision``, ``fingerprint``,
        ``cache``.
    """

    features: np.ndarray | None
    ok: np.ndarray
    keys: list[str | None]
    failures: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _hash_input(item: Any) -> str:
    if isinstance(item, (str, os.PathLike)):
        return hash_bytes(read_bytes(item))
    if isinstance(item, np.ndarray):
        return hash_array(item)
    if isinstance(item, Image.Image):
        return hash_array(np.asarray(item), mode=item.mode)
    if isinstance(item, (bytes, bytearray)):
        return hash_bytes(bytes(item))
    raise ImageDecodeError(describe_source(item), "unsupported input type (expected a path, PIL image or array)")


#: What reading, decoding and resizing one image may raise for a bad *file*: I/O errors
#: (Pillow's ``UnidentifiedImageError`` and lazy-load errors are ``OSError`` too) and
#: Pillow's refusal of a decompression bomb. :func:`decode_image` already turns these
#: into :class:`ImageDecodeError`; they are caught again around the resize, which is the
#: first thing to touch the pixels of a lazily loaded image.
_PER_IMAGE_ERRORS = (OSError, Image.DecompressionBombError)


class _DecodeDataset(torch.utils.data.Dataset):
    """Decode + resize + crop one image; a bad file becomes a reason, never an exception.

    Only decode and I/O errors are per-image failures. Anything else (a ``TypeError`` in
    the preprocessing, say) is a bug in deepfeat, not in the image: it propagates and
    stops the run with its traceback rather than marking every image as failed.
    """

    def __init__(self, items: list[Any], preprocess: Any, max_pixels: int) -> None:
        self.items = items
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        c, (h, w) = 3, preprocess.crop
        self._blank = torch.zeros(c, h, w, dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        item = self.items[i]
        try:
            img = decode_pixels(item, draft_size=self.preprocess.draft_size, max_pixels=self.max_pixels)
            return i, self.preprocess.geometry(img), ""
        except ImageDecodeError as exc:
            return i, self._blank, exc.reason
        except MemoryError:
            return i, self._blank, "out of memory while decoding"
        except _PER_IMAGE_ERRORS as exc:
            return i, self._blank, f"cannot decode or resize: {type(exc).__name__}: {exc}"


def _collate(batch: list[tuple[int, torch.Tensor, str]]) -> tuple[list[int], torch.Tensor, list[str]]:
    idx = [b[0] for b in batch]
    # Stack as (N, H, W, C) and view as (N, C, H, W): the channels_last layout the model
    # prefers, with no layout conversion of the float batch later.
    x = torch.stack([b[1].permute(1, 2, 0) for b in batch]).permute(0, 3, 1, 2)
    return idx, x, [b[2] for b in batch]


def _one_call_at_a_time(method: Callable) -> Callable:
    """Serialise calls on one Featurizer: it holds one cache handle and lazily builds one
    network, and fitted models share a Featurizer per feature space across the process
    (see :func:`deepfeat.classify.embedder.shared_featurizer`), so that one model can be
    used from several threads. Each call uses every core already (streams); a second
    thread waits for it instead of racing it for the cache's writer state."""

    @functools.wraps(method)
    def locked(self: Featurizer, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class Featurizer:
    """Turn images into embeddings with a truncated pretrained backbone, cached in HDF5.

    The backbone is resolved at construction (cheap: name, weights id, preprocessing) and
    built on first use; nothing is built at all when every input is already cached.

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
        :func:`~deepfeat.featurize.runtime.trace_for_cpu`). ``auto`` does it for jobs of
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
        if engine not in ENGINES:
            raise InvalidParameterError(f"engine must be one of {ENGINES}, got {engine!r}")
        if storage_dtype not in STORAGE_DTYPES:
            raise InvalidParameterError(f"storage_dtype must be one of {STORAGE_DTYPES}, got {storage_dtype!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
        if num_workers != "auto" and (not isinstance(num_workers, int) or num_workers < 0):
            raise InvalidParameterError(f"num_workers must be 'auto' or an integer >= 0, got {num_workers!r}")
        self.backbone = backbone
        self.layer = None if layer in (None, "", PENULTIMATE) else layer
        self.pool = pool
        self.weights = weights
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.cache_path = None if cache is None else os.fspath(cache)
        self.runtime: Runtime = resolve_runtime(device, precision, channels_last)
        self.jit = jit
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.tta = tta
        self.storage_dtype = storage_dtype
        self.max_pixels = max_pixels
        self.lock_timeout = lock_timeout
        self.progress = progress
        self.engine = engine
        self.ray_address = ray_address
        self.resolved: ResolvedBackbone = resolve_backbone(backbone, weights=weights, checkpoint=self.checkpoint)
        self.forward_passes = 0
        self._model: torch.nn.Module | None = None
        self._traced: torch.nn.Module | None = None
        self._want_trace = False
        self._trace_tried = False
        self._dim: int | None = None
        self._cache: FeatureCache | None = None
        self._lock = threading.RLock()

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
            "weights_id": self.resolved.weights_id,
            "layer": self.layer or PENULTIMATE,
            "pool": self.pool,
            "preprocess": self.preprocess.to_dict(),
            "precision": self.runtime.precision,
            "tta": self.tta,
            "storage_dtype": self.storage_dtype,
            "fingerprint": self.fingerprint,
        }

    @property
    def fingerprint(self) -> str:
        return fingerprint(
            backbone=f"{self.resolved.family}:{self.resolved.arch}",
            weights_id=self.resolved.weights_id,
            layer=self.layer or PENULTIMATE,
            pool=self.pool,
            preprocess=self.preprocess.to_dict(),
            precision=self.runtime.precision,
            tta=self.tta,
        )

    def space_in(self, cache: FeatureCache | None) -> str:
        """The name under which ``cache`` holds this feature space.

        :attr:`fingerprint`, unless the cache lacks it and holds the same space under
        the name deepfeat 0.1.0 gave it (see
        :func:`~deepfeat.featurize.identity.legacy_fingerprints`), computed with this
        precision: then that older space is read and extended, not computed again.
        """
        fp = self.fingerprint
        if cache is None or self.tta != "none" or cache.space_info(fp) is not None:
            return fp
        names = legacy_fingerprints(
            backbone=f"{self.resolved.family}:{self.resolved.arch}",
            weights_ids=(self.resolved.weights_id, *self.resolved.legacy_weights_ids),
            layer=self.layer or PENULTIMATE, pool=self.pool, preprocess=self.preprocess.to_dict(),
        )
        for name in names:
            info = cache.space_info(name)
            if info is not None and space_precision(info) == self.runtime.precision:
                log.info("using the space %s written by deepfeat 0.1.0 for %s", name, fp)
                return name
        return fp

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

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None
        state["_traced"] = None
        state["_trace_tried"] = False
        state["_cache"] = None
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ model
    @property
    def model(self) -> torch.nn.Module:
        """The truncated backbone on its device (built on first access).

        Where its first convolution absorbed the mean/std normalisation
        (:func:`~deepfeat.featurize.runtime.fold_input_normalization`; attribute
        ``takes_raw_pixels``) it takes the uint8 pixel batch: feed it through
        :meth:`_model_input`, never through ``preprocess.normalize`` yourself.
        """
        if self._model is None:
            t0 = time.perf_counter()
            net = truncate(self.resolved.build(), self.layer, self.pool, self.resolved.family)
            net = net.eval().to(self.runtime.device)
            if self.runtime.channels_last:
                net = net.to(memory_format=torch.channels_last)
            h, w = self.preprocess.crop
            example = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
            self._model = optimize_for_inference(net, self._layout(example.to(self.runtime.device)))
            # the network takes uint8 pixels where its first convolution can absorb mean/std
            p, dev = self.preprocess, self.runtime.device
            raw = fold_input_normalization(self._model, p.mean, p.std, self._layout(
                self._example_pixels(2, torch.Generator().manual_seed(0)).to(dev)), self.runtime.dtype)
            self._model = self._model if raw is None else raw
            log.info("built %s (%s) in %.1f s", self.backbone, self.layer or PENULTIMATE, time.perf_counter() - t0)
        return self._model

    @property
    def built(self) -> bool:
        """Whether the network is built (timing it then costs no build)."""
        return self._model is not None

    @_one_call_at_a_time
    def prepare(self, n_images: int | None = None) -> None:
        """Build the network now, as a job of ``n_images`` images would run it.

        Featurizing builds it on first use anyway; call this to keep the build out of a
        timed run. With ``jit="auto"`` the traced CPU network is built when ``n_images``
        reaches :data:`JIT_MIN_IMAGES` (``None``: only when ``jit=True``).
        """
        self._want_trace = self._use_trace(n_images)
        self._network()

    def _use_trace(self, n_images: int | None) -> bool:
        if self.runtime.device.type != "cpu" or self.jit is False:
            return False
        return self.jit is True or (n_images is not None and n_images >= JIT_MIN_IMAGES)

    def _network_ready(self) -> bool:
        return self._model is not None and (self._trace_tried or not self._want_trace)

    def _network(self) -> torch.nn.Module:
        """The network to run: the traced copy once one was built, else the eager one."""
        model = self.model
        if self._want_trace and not self._trace_tried:
            self._trace_tried = True
            t0 = time.perf_counter()
            h, w = self.preprocess.crop
            gen = torch.Generator().manual_seed(0)
            if getattr(model, "takes_raw_pixels", False):
                example = self._layout(self._example_pixels(CPU_FORWARD_ROWS, gen))
                check = self._layout(self._example_pixels(3, gen))
            else:
                example = self._layout(torch.randn(CPU_FORWARD_ROWS, 3, h, w, generator=gen))
                check = self._layout(torch.randn(3, 3, h, w, generator=gen))
            self._traced = trace_for_cpu(model, example, self.runtime, check)
            if self._traced is not None:
                log.info("traced and fused the network for the CPU in %.1f s", time.perf_counter() - t0)
        return model if self._traced is None else self._traced

    @property
    def dim(self) -> int:
        """Embedding width (from the cache when known, else one forward pass on zeros)."""
        if self._dim is None:
            info = self.cache.space_info(self.space_in(self.cache)) if self.cache else None
            if info:
                self._dim = int(info["dim"])
            else:
                h, w = self.preprocess.crop
                x = torch.zeros(1, 3, h, w, device=self.runtime.device)
                with self.runtime.autocast():
                    self._dim = int(self.model(x).shape[1])
        return self._dim

    @property
    def cache(self) -> FeatureCache | None:
        if self.cache_path is None:
            return None
        if self._cache is None:
            self._cache = FeatureCache(self.cache_path, lock_timeout=self.lock_timeout)
        return self._cache

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.runtime.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def _model_input(self, batch: torch.Tensor) -> torch.Tensor:
        """A uint8 ``(N, 3, H, W)`` batch from the loader as the model's input on its device."""
        x = batch.to(self.runtime.device, non_blocking=True)
        if getattr(self.model, "takes_raw_pixels", False):  # normalisation folded into the network
            return self._layout(x)
        return self._layout(self.preprocess.normalize(x))

    def _example_pixels(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """A random uint8 ``(n, 3, H, W)`` batch at the input size."""
        h, w = self.preprocess.crop
        return torch.randint(0, 256, (n, 3, h, w), generator=gen, dtype=torch.uint8)

    def _space_attrs(self) -> dict[str, Any]:
        import h5py
        import timm
        import torchvision

        from deepfeat import __version__

        s = self.spec
        return {
            "fingerprint": self.fingerprint,
            "backbone": s["backbone"],
            "weights": "none (random, seeded)" if s["weights"] is None else s["weights"],
            "weights_id": s["weights_id"],
            "layer": s["layer"],
            "pool": s["pool"],
            "preprocess": s["preprocess"],
            "precision": s["precision"],
            "tta": s["tta"],
            "computed_with": self.runtime.describe(),
            "versions": {
                "deepfeat": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
                "timm": timm.__version__, "h5py": h5py.__version__, "numpy": np.__version__,
            },
        }

    # ------------------------------------------------------------------ running
    def _n_streams(self, n_todo: int) -> int:
        """Threads that each decode and forward whole batches (CPU with ``num_workers="auto"``)."""
        if self.num_workers != "auto" or self.runtime.device.type != "cpu":
            return 0
        return max(1, min(cpu_count(), -(-n_todo // self.batch_size)))

    def _n_workers(self, n_todo: int) -> int:
        if self.num_workers != "auto":
            return int(self.num_workers)
        if n_todo <= self.batch_size:
            return 0
        cores = cpu_count()
        return max(1, min(4, cores - 1)) if self.runtime.device.type == "cpu" else min(8, cores)

    @_one_call_at_a_time
    def featurize(
        self, inputs: Sequence[Any], *, return_features: bool = True, log_failures: bool = True
    ) -> FeaturizeResult:
        """Embed ``inputs``, computing only what the cache lacks.

        Parameters
        ----------
        inputs : sequence
            Paths, PIL images or numpy arrays (HxW or HxWxC).
        return_features : bool, default=True
            ``False`` only fills the cache (memory then does not grow with the inputs).
        log_failures : bool, default=True
            Log a warning per image that could not be read; ``False`` leaves the
            reporting to the caller (the failures are in the result either way).

        Returns
        -------
        FeaturizeResult
        """
        if isinstance(inputs, (str, os.PathLike, Image.Image, np.ndarray)) and not (
            isinstance(inputs, np.ndarray) and inputs.dtype == object
        ):
            raise TypeError(
                "featurize() takes a sequence of images; wrap a single image in a list, "
                "and use deepfeat.featurize.inputs.collect_images() for a folder"
            )
        inputs = list(inputs)
        t_start = time.perf_counter()
        n = len(inputs)
        keys: list[str | None] = [None] * n
        failures: dict[int, str] = {}

        # Phase 1: hash everything (threads: hashing and file reads release the GIL).
        def _h(i: int) -> tuple[int, str | None, str]:
            try:
                return i, _hash_input(inputs[i]), ""
            except ImageDecodeError as exc:
                return i, None, exc.reason

        with ThreadPoolExecutor(max_workers=min(8, max(1, cpu_count() * 2))) as ex:
            for i, k, reason in ex.map(_h, range(n)):
                keys[i] = k
                if k is None:
                    failures[i] = reason
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k is not None and k not in first:
                first[k] = i
        unique = list(first)
        cache = self.cache
        if cache is not None:
            from deepfeat.featurize.ray_engine import fold_orphan_journals

            fold_orphan_journals(cache)  # rows a killed Ray job left behind count as cached
        fp = self.space_in(cache)
        in_cache = cache.contains(fp, unique) if cache is not None else np.zeros(len(unique), bool)
        todo = [k for k, c in zip(unique, in_cache) if not c]
        kill_point("featurize.hashed")
        if not todo and cache is not None:
            cache.fold_pending()  # rows a killed run left in the journal go into the .h5 file
        computed: dict[str, np.ndarray] = {}
        bad_keys: dict[str, str] = {}
        t_feat = 0.0
        n_done = 0
        if todo:
            if cache is not None:
                with cache.writer():
                    # Another writer may have added rows while we waited for the lock.
                    still = ~cache.contains(fp, todo)
                    todo = [k for k, s in zip(todo, still) if s]
                    t0 = time.perf_counter()
                    n_done = self._compute(fp, todo, first, inputs, computed, bad_keys, cache, return_features)
                    t_feat = time.perf_counter() - t0
            else:
                t0 = time.perf_counter()
                n_done = self._compute(fp, todo, first, inputs, computed, bad_keys, None, True)
                t_feat = time.perf_counter() - t0

        # Assemble aligned output.
        for i, k in enumerate(keys):
            if k is not None and k in bad_keys:
                failures[i] = bad_keys[k]
        ok = np.array([i not in failures for i in range(n)], dtype=bool)
        features = None
        if return_features:
            dim = self._dim if self._dim is not None else (self.dim if ok.any() else 0)
            features = np.full((n, dim), np.nan, dtype=np.float32)
            need = [k for k in unique if k not in computed and k not in bad_keys]
            from_cache: dict[str, np.ndarray] = {}
            if need and cache is not None:
                cache.refresh()
                vals, found = cache.read(fp, need)
                from_cache = {k: v for k, v, f in zip(need, vals, found) if f}
            for i, k in enumerate(keys):
                if not ok[i]:
                    continue
                row = computed.get(k) if k in computed else from_cache.get(k)
                if row is None:  # pragma: no cover - would mean a cache bug
                    raise DeepfeatError(f"internal error: no features for {describe_source(inputs[i])}")
                features[i] = row
        fail_list = [
            {"index": i, "path": describe_source(inputs[i]), "reason": failures[i]} for i in sorted(failures)
        ]
        seconds = time.perf_counter() - t_start
        # The counts partition the inputs: total = featurized + cached + deduplicated + failed.
        seen: set[str] = set()
        n_dedup = n_cached = 0
        for i, k in enumerate(keys):
            if not ok[i]:
                continue
            if k in seen:
                n_dedup += 1
                continue
            seen.add(k)
            if k not in computed and k not in bad_keys:
                n_cached += 1
        if not return_features:
            n_cached = len(seen) - n_done
        summary = {
            "total": n,
            "featurized": n_done,
            "cached": n_cached,
            "deduplicated": n_dedup,
            "failed": len(fail_list),
            "seconds": round(seconds, 3),
            "featurize_seconds": round(t_feat, 3),
            "images_per_second": round(n_done / t_feat, 2) if t_feat > 0 and n_done else 0.0,
            "device": self.runtime.device.type,
            "precision": self.runtime.precision,
            "fingerprint": fp,
            "cache": self.cache_path,
        }
        for f_ in fail_list if log_failures else ():
            log.warning("%s: %s", f_["path"], f_["reason"])
        return FeaturizeResult(features, ok, keys, fail_list, summary)

    def _compute(self, fp: str, todo: list[str], first: dict[str, int], inputs: list[Any],
                 computed: dict[str, np.ndarray], bad: dict[str, str],
                 cache: FeatureCache | None, keep: bool) -> int:
        """Embed ``todo`` with the chosen engine; rows go to ``cache`` and/or ``computed``."""
        if self.engine == "ray":
            from deepfeat.featurize.ray_engine import run_on_ray

            items = [inputs[first[k]] for k in todo]
            if not all(isinstance(x, (str, os.PathLike)) for x in items):
                raise TypeError("engine='ray' takes image file paths (the actors read the files)")
            return run_on_ray(self, todo, [os.fspath(x) for x in items], computed, bad, cache, keep, space=fp)
        return self._run(fp, todo, first, inputs, computed, bad, cache, keep)

    def _run(self, fp: str, todo: list[str], first: dict[str, int], inputs: list[Any],
             computed: dict[str, np.ndarray], bad: dict[str, str],
             cache: FeatureCache | None, keep: bool) -> int:
        from tqdm.auto import tqdm

        items = [inputs[first[k]] for k in todo]
        attrs = self._space_attrs() if cache is not None else {}
        # A space keeps the storage dtype it was created with; new rows adopt it, so the
        # rows returned now equal the rows the cache returns later.
        info = cache.space_info(fp) if cache is not None else None
        store = np.dtype(info["dtype"] if info else self.storage_dtype)
        streams = self._n_streams(len(items))
        self._want_trace = self._want_trace or self._use_trace(len(items))
        batches = self._stream_batches(items, streams) if streams else self._loader_batches(items)
        done = 0
        bar = tqdm(total=len(items), unit="img", desc="featurize", file=sys.stderr,
                   disable=not (self.progress and sys.stderr.isatty()), leave=False)
        try:
            for idx, reasons, out in batches:
                good = [j for j, r in enumerate(reasons) if not r]
                for j, r in enumerate(reasons):
                    if r:
                        bad[todo[idx[j]]] = r
                if good:
                    feats = out.numpy().astype(store, copy=False)
                    self._dim = feats.shape[1]
                    bkeys = [todo[idx[j]] for j in good]
                    self.forward_passes += len(good)
                    done += len(good)
                    kill_point("featurize.forwarded")
                    if cache is not None:
                        cache.append(fp, attrs, bkeys, feats)
                    if keep:
                        f32 = feats.astype(np.float32)
                        for k, row in zip(bkeys, f32):
                            computed[k] = row
                bar.update(len(idx))
        finally:
            bar.close()
            batches.close()
        return done

    @_one_call_at_a_time
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
            return self._infer(self._model_input(x)).numpy()

    def _forward(self, batch: torch.Tensor, reasons: list[str]) -> torch.Tensor | None:
        """Embeddings (float32, on the CPU) of the decodable images of a uint8 batch."""
        good = [j for j, r in enumerate(reasons) if not r]
        if not good:
            return None
        return self._infer(self._model_input(batch[good] if len(good) < len(reasons) else batch))

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        """Forward a model-ready batch; float32 embeddings on the CPU.

        On a CPU the batch goes through in slices of :data:`CPU_FORWARD_ROWS` images, whose
        activations stay in cache (about 10 % faster per image than 32 at a time).
        """
        model = self._network()  # built on the first good batch: a run of only broken files never loads it
        step = CPU_FORWARD_ROWS if self.runtime.device.type == "cpu" else len(x)
        # the traced network casts internally; autocast would only add dispatch overhead
        ctx = torch.inference_mode() if model is self._traced else self.runtime.autocast()
        with ctx:
            outs = [self._embed_slice(model, x[s : s + step]) for s in range(0, len(x), step)]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out.float().cpu()

    def _embed_slice(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.tta == "none":
            return model(x)
        # "flip": the mean of the embeddings of the image and of its horizontal mirror,
        # summed in float32 so that an image and its mirror give the same row.
        mirrored = self._layout(torch.flip(x, dims=(3,)))
        return (model(x).float() + model(mirrored).float()) / 2

    def _loader_batches(self, items: list[Any]) -> Iterator[tuple[list[int], list[str], torch.Tensor | None]]:
        """Decode in DataLoader worker processes, forward in this thread (GPUs, explicit workers)."""
        ds = _DecodeDataset(items, self.preprocess, self.max_pixels)
        workers = self._n_workers(len(items))
        loader = torch.utils.data.DataLoader(
            ds, batch_size=self.batch_size, shuffle=False, num_workers=workers,
            collate_fn=_collate, pin_memory=self.runtime.device.type == "cuda",
            worker_init_fn=_worker_init if workers else None,
            prefetch_factor=4 if workers else None, persistent_workers=False,
            multiprocessing_context="fork" if workers and sys.platform.startswith("linux") else None,
            # the worker seeds come from this generator, not from torch's global one (whose
            # state is the caller's)
            generator=torch.Generator().manual_seed(0),
        )
        with keeping_signal_handler("SIGCHLD"):  # torch installs one for its worker processes
            for idx, batch, reasons in loader:
                yield idx, reasons, self._forward(batch, reasons)

    def _stream_batches(self, items: list[Any], streams: int
                        ) -> Iterator[tuple[list[int], list[str], torch.Tensor | None]]:
        """CPU: ``streams`` threads, each decoding whole batches and running their forward.

        Every thread runs single-threaded kernels on its own batch, so all cores stay busy
        with no intra-op barriers to wait at: on a 2-core machine shared with other
        processes, two intra-op threads spend most of their time waiting for each other.
        Pillow and PyTorch release the GIL while they decode, resample and compute.
        Results come back in input order; at most ``2 * streams`` batches are in flight.
        """
        ds = _DecodeDataset(items, self.preprocess, self.max_pixels)
        bs = self.batch_size
        lock = threading.Lock()

        def work(start: int) -> tuple[list[int], list[str], torch.Tensor | None]:
            idx = list(range(start, min(start + bs, len(items))))
            idx, batch, reasons = _collate([ds[i] for i in idx])
            if not self._network_ready() and any(not r for r in reasons):
                with lock:
                    self._network()  # build once, not in every thread
            return idx, reasons, self._forward(batch, reasons)

        # the count is process-wide: restored when the last concurrent run ends
        with torch_single_threaded():
            ex = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="deepfeat-stream")
            try:
                starts = iter(range(0, len(items), bs))
                pending = deque(ex.submit(work, s) for s in itertools.islice(starts, 2 * streams))
                while pending:
                    res = pending.popleft().result()
                    nxt = next(starts, None)
                    if nxt is not None:
                        pending.append(ex.submit(work, nxt))
                    yield res
            finally:
                ex.shutdown(wait=True, cancel_futures=True)
