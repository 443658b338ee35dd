"""The :class:`TextFeaturizer`: texts in, embeddings out, each unique text encoded once.

The text counterpart of :class:`~deepfeat.featurize.featurizer.Featurizer`, with the same
result type and the same cache: a row's key is the hash of the exact text (UTF-8), its
space the fingerprint of encoder, weights, cut point, pooling, window (max length) and
resolved precision (:func:`~deepfeat.featurize.identity.fingerprint`).

Only the texts the cache lacks are tokenized and encoded: sorted by token length, cut
into batches padded to their own longest text (dynamic padding), run on every core (one
single-threaded stream per core, as for images) and written to the cache batch by batch,
so a killed run loses at most the batches in flight. Texts longer than the window are
truncated and counted (``summary["truncated"]``), never silently.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from deepfeat.exceptions import InvalidParameterError, WeightsUnavailableError
from deepfeat.featurize.backbones import ResolvedBackbone, resolve_backbone
from deepfeat.featurize.cache import FeatureCache
from deepfeat.featurize.featurizer import STORAGE_DTYPES, FeaturizeResult
from deepfeat.featurize.hashing import hash_bytes
from deepfeat.featurize.identity import fingerprint
from deepfeat.featurize.runtime import Runtime, cpu_count, resolve_runtime
from deepfeat.featurize.text_encoders import (
    DEFAULT_TEXT_BACKBONE,
    TFIDF,
    TextEncoderNet,
    normalize_text_pool,
)
from deepfeat.process_state import torch_single_threaded

__all__ = ["TextFeaturizer", "text_key", "text_problem"]

log = logging.getLogger(__name__)


def text_key(text: str) -> str:
    """The cache key of a text: a hash of its exact UTF-8 bytes.

    Examples
    --------
    >>> text_key("good") == text_key("good"), text_key("good") == text_key("good ")
    (True, False)
    """
    return hash_bytes(text.encode("utf-8", "surrogatepass"))


def text_problem(item: Any) -> str:
    """Why ``item`` cannot be encoded as a text, or ``""`` when it can."""
    if not isinstance(item, str):
        return f"not a text (got {type(item).__name__})"
    if not item.strip():
        return "empty text" if not item else "whitespace-only text"
    return ""


def describe_text(text: Any, width: int = 60) -> str:
    """A short quote of a text for messages."""
    s = text if isinstance(text, str) else f"<{type(text).__name__}>"
    s = " ".join(s.split())
    return repr(s if len(s) <= width else s[: width - 1] + "…")


def _one_call_at_a_time(method: Callable) -> Callable:
    @functools.wraps(method)
    def locked(self: TextFeaturizer, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class TextFeaturizer:
    """Turn texts into embeddings with a (cut) transformer encoder, cached in HDF5.

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
        if engine not in ("local", "ray"):
            raise InvalidParameterError(f"engine must be one of ('local', 'ray'), got {engine!r}")
        if backbone == TFIDF:
            raise InvalidParameterError("'tfidf' is fitted on texts, not a frozen encoder: use TextEmbedder")
        if storage_dtype not in STORAGE_DTYPES:
            raise InvalidParameterError(f"storage_dtype must be one of {STORAGE_DTYPES}, got {storage_dtype!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InvalidParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
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
        self.cache_path = None if cache is None else os.fspath(cache)
        self.runtime: Runtime = resolve_runtime(device, precision, False)
        self.batch_size = batch_size
        self.storage_dtype = storage_dtype
        self.lock_timeout = lock_timeout
        self.progress = progress
        self.engine = engine
        self.ray_address = ray_address
        self.forward_passes = 0
        self._model: TextEncoderNet | None = None
        self._tokenizer: Any = None
        self._dim: int | None = None
        self._cache: FeatureCache | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ identity
    @property
    def preprocess(self) -> dict[str, Any]:
        return {**self.resolved.preprocess.to_dict(), "max_length": self.max_length}

    @property
    def fingerprint(self) -> str:
        return fingerprint(
            backbone=f"text:{self.resolved.family}:{self.resolved.arch}",
            weights_id=self.resolved.weights_id, layer=self.layer or "last", pool=self.pool,
            preprocess=self.preprocess, precision=self.runtime.precision, tta="none",
        )

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-able description of the feature space; enough to rebuild this featurizer."""
        return {
            "modality": "text",
            "backbone": self.backbone,
            "weights": self.weights,
            "checkpoint": self.checkpoint,
            "weights_id": self.resolved.weights_id,
            "layer": self.layer or "last",
            "pool": self.pool,
            "max_length": self.max_length,
            "preprocess": self.preprocess,
            "precision": self.runtime.precision,
            "storage_dtype": self.storage_dtype,
            "fingerprint": self.fingerprint,
        }

    def space_in(self, cache: FeatureCache | None) -> str:
        return self.fingerprint

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **overrides: Any) -> TextFeaturizer:
        """Rebuild a featurizer from :attr:`spec`; runtime settings may be overridden."""
        keys = ("backbone", "weights", "checkpoint", "layer", "pool", "max_length", "storage_dtype")
        kw = {k: spec[k] for k in keys if k in spec}
        if kw.get("layer") == "last":
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
        return (f"TextFeaturizer({self.backbone!r}, layer={self.layer or 'last'!r}, pool={self.pool!r}, "
                f"max_length={self.max_length}, {self.runtime.describe()})")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_model=None, _tokenizer=None, _cache=None)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ model
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = self.resolved.preprocess.load_tokenizer()
        return self._tokenizer

    @property
    def model(self) -> TextEncoderNet:
        """The cut, pooled encoder on its device (built on first access)."""
        if self._model is None:
            t0 = time.perf_counter()
            net = TextEncoderNet(self.resolved.build(), self.layer, self.pool)
            self._model = net.eval().to(self.runtime.device)
            log.info("built %s (%s) in %.1f s", self.backbone, self.layer or "last", time.perf_counter() - t0)
        return self._model

    @property
    def built(self) -> bool:
        return self._model is not None

    @_one_call_at_a_time
    def prepare(self, n_texts: int | None = None) -> None:
        """Build the encoder and load the tokenizer now (keeps the build out of a timed run)."""
        _ = self.tokenizer, self.model

    @property
    def dim(self) -> int:
        """Embedding width (from the cache when known, else the encoder's hidden size)."""
        if self._dim is None:
            info = self.cache.space_info(self.fingerprint) if self.cache else None
            if info:
                self._dim = int(info["dim"])
            else:
                self._dim = int(self.embed_texts(["a"]).shape[1])
        return self._dim

    @property
    def cache(self) -> FeatureCache | None:
        if self.cache_path is None:
            return None
        if self._cache is None:
            self._cache = FeatureCache(self.cache_path, lock_timeout=self.lock_timeout)
        return self._cache

    def _space_attrs(self) -> dict[str, Any]:
        import h5py
        import transformers

        from deepfeat import __version__

        s = self.spec
        return {
            "fingerprint": self.fingerprint, "modality": "text", "backbone": s["backbone"],
            "weights": "none (random, seeded)" if s["weights"] is None else s["weights"],
            "weights_id": s["weights_id"], "layer": s["layer"], "pool": s["pool"],
            "preprocess": s["preprocess"], "precision": s["precision"], "tta": "none",
            "computed_with": self.runtime.describe(),
            "versions": {"deepfeat": __version__, "torch": torch.__version__,
                         "transformers": transformers.__version__, "h5py": h5py.__version__,
                         "numpy": np.__version__},
        }

    # ------------------------------------------------------------------ encoding
    def _tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids of each text within the window, and which texts were truncated."""
        if not texts:  # the tokenizer fails on an empty batch
            return [], np.zeros(0, bool)
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                             return_overflowing_tokens=True, stride=0, padding=False)
        owner = enc["overflow_to_sample_mapping"]
        ids: list[list[int] | None] = [None] * len(texts)
        truncated = np.zeros(len(texts), bool)
        for row, i in zip(enc["input_ids"], owner):
            if ids[i] is None:
                ids[i] = row
            else:
                truncated[i] = True
        return [r or [] for r in ids], truncated

    def _encode_batch(self, ids: list[list[int]]) -> torch.Tensor:
        """Pooled embeddings of one batch padded to its longest text (float32, CPU)."""
        longest = max(len(r) for r in ids)
        pad = self.tokenizer.pad_token_id or 0
        x = torch.full((len(ids), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), longest), dtype=torch.long)
        for j, r in enumerate(ids):
            x[j, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[j, : len(r)] = 1
        dev = self.runtime.device
        with self.runtime.autocast():
            out = self.model(x.to(dev), mask.to(dev))
        return out.float().cpu()

    def _batches(self, ids: list[list[int]]) -> Iterator[tuple[list[int], torch.Tensor]]:
        """(positions, embeddings) of length-sorted batches, in sorted order."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        bs = self.batch_size
        groups = [order[s : s + bs] for s in range(0, len(order), bs)]
        streams = max(1, min(cpu_count(), len(groups))) if self.runtime.device.type == "cpu" else 1
        if streams == 1:
            for g in groups:
                yield g, self._encode_batch([ids[i] for i in g])
            return
        _ = self.model  # build once, not in every thread
        with torch_single_threaded():
            ex = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="deepfeat-text")
            try:
                it = iter(groups)
                pending = deque(
                    (g, ex.submit(self._encode_batch, [ids[i] for i in g]))
                    for g in itertools.islice(it, 2 * streams)
                )
                while pending:
                    g, fut = pending.popleft()
                    nxt = next(it, None)
                    if nxt is not None:
                        pending.append((nxt, ex.submit(self._encode_batch, [ids[i] for i in nxt])))
                    yield g, fut.result()
            finally:
                ex.shutdown(wait=True, cancel_futures=True)

    @_one_call_at_a_time
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` (all valid), nothing read from or written to the cache."""
        ids, _ = self._tokenize(texts)
        out = np.zeros((len(ids), 0), np.float32)
        for g, feats in self._batches(ids):
            if out.shape[1] == 0:
                out = np.zeros((len(ids), feats.shape[1]), np.float32)
            out[g] = feats.numpy()
        self.forward_passes += len(ids)
        return out

    @_one_call_at_a_time
    def featurize(
        self, inputs: Sequence[Any], *, return_features: bool = True, log_failures: bool = True
    ) -> FeaturizeResult:
        """Embed ``inputs`` (texts), computing only what the cache lacks.

        Returns
        -------
        FeaturizeResult
            As for images; ``failures`` name empty or whitespace-only texts (and items
            that are not texts); ``summary`` adds ``truncated`` (texts cut to the window)
            and ``texts_per_second``.
        """
        if isinstance(inputs, str):
            raise TypeError("featurize() takes a sequence of texts; wrap a single text in a list")
        inputs = list(inputs)
        t_start = time.perf_counter()
        n = len(inputs)
        keys: list[str | None] = [None] * n
        failures: dict[int, str] = {}
        for i, t in enumerate(inputs):
            why = text_problem(t)
            if why:
                failures[i] = why
            else:
                keys[i] = text_key(t)
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k is not None and k not in first:
                first[k] = i
        unique = list(first)
        cache = self.cache
        fp = self.fingerprint
        in_cache = cache.contains(fp, unique) if cache is not None else np.zeros(len(unique), bool)
        todo = [k for k, c in zip(unique, in_cache) if not c]
        computed: dict[str, np.ndarray] = {}
        n_trunc = 0
        t_feat = 0.0
        if todo:
            t0 = time.perf_counter()
            if cache is not None:
                with cache.writer():
                    still = ~cache.contains(fp, todo)
                    todo = [k for k, s in zip(todo, still) if s]
                    n_trunc = self._run(fp, todo, [inputs[first[k]] for k in todo], computed, cache,
                                        return_features)
            else:
                n_trunc = self._run(fp, todo, [inputs[first[k]] for k in todo], computed, None, True)
            t_feat = time.perf_counter() - t0
        ok = np.array([i not in failures for i in range(n)], dtype=bool)
        features = None
        if return_features:
            dim = self._dim if self._dim is not None else (self.dim if ok.any() else 0)
            features = np.full((n, dim), np.nan, dtype=np.float32)
            need = [k for k in unique if k not in computed]
            from_cache: dict[str, np.ndarray] = {}
            if need and cache is not None:
                cache.refresh()
                vals, found = cache.read(fp, need)
                from_cache = {k: v for k, v, f in zip(need, vals, found) if f}
            for i, k in enumerate(keys):
                if ok[i]:
                    features[i] = computed[k] if k in computed else from_cache[k]
        fail_list = [{"index": i, "path": f"row {i}: {describe_text(inputs[i])}", "reason": failures[i]}
                     for i in sorted(failures)]
        n_done = len(todo)
        n_unique = len(unique)
        summary = {
            "total": n, "featurized": n_done, "cached": n_unique - n_done,
            "deduplicated": int(ok.sum()) - n_unique, "failed": len(fail_list), "truncated": n_trunc,
            "max_length": self.max_length,
            "seconds": round(time.perf_counter() - t_start, 3), "featurize_seconds": round(t_feat, 3),
            "texts_per_second": round(n_done / t_feat, 2) if t_feat > 0 and n_done else 0.0,
            "device": self.runtime.device.type, "precision": self.runtime.precision,
            "fingerprint": fp, "cache": self.cache_path,
        }
        summary["images_per_second"] = summary["texts_per_second"]  # the key image reports read
        if n_trunc:
            log.warning("%d text(s) longer than the window of %d tokens were truncated", n_trunc, self.max_length)
        for f_ in fail_list if log_failures else ():
            log.warning("%s: %s", f_["path"], f_["reason"])
        return FeaturizeResult(features, ok, keys, fail_list, summary)

    def _run(self, fp: str, todo: list[str], texts: list[str], computed: dict[str, np.ndarray],
             cache: FeatureCache | None, keep: bool) -> int:
        """Encode ``texts`` (keys ``todo``); rows go to ``cache`` and/or ``computed``. Returns
        how many were truncated."""
        from tqdm.auto import tqdm

        if not texts:  # another writer added them while this one waited for the lock
            return 0
        ids, truncated = self._tokenize(texts)
        if self.engine == "ray":
            from deepfeat.featurize.ray_engine import run_on_ray

            bad: dict[str, str] = {}
            run_on_ray(self, todo, texts, computed, bad, cache, keep, space=fp)
            if computed:
                self._dim = len(next(iter(computed.values())))
            if bad:  # pragma: no cover - valid texts do not fail; a dead actor's batch is retried
                raise InvalidParameterError(f"{len(bad)} texts failed on Ray: {next(iter(bad.values()))}")
            return int(truncated.sum())
        info = cache.space_info(fp) if cache is not None else None
        store = np.dtype(info["dtype"] if info else self.storage_dtype)
        attrs = self._space_attrs() if cache is not None else {}
        bar = tqdm(total=len(texts), unit="text", desc="featurize", disable=not self.progress, leave=False)
        try:
            for g, out in self._batches(ids):
                feats = out.numpy().astype(store, copy=False)
                self._dim = feats.shape[1]
                bkeys = [todo[i] for i in g]
                self.forward_passes += len(g)
                if cache is not None:
                    cache.append(fp, attrs, bkeys, feats)
                if keep:
                    for k, row in zip(bkeys, feats.astype(np.float32)):
                        computed[k] = row
                bar.update(len(g))
        finally:
            bar.close()
        return int(truncated.sum())


_RUNTIME = ("cache", "device", "precision", "batch_size", "storage_dtype", "lock_timeout", "progress")
