"""The featurizing engine: keys -> cache lookup -> read -> encode -> write rows -> summary.

One loop for every modality. A featurizer is this engine with two plug-in roles
(:mod:`deepfeat.featurize.roles`):

* a **reader** (:class:`~deepfeat.featurize.image_reader.ImageReader`,
  :class:`~deepfeat.featurize.text_reader.TextReader`): the key of an item (a hash of its
  content), its problems (one reason per bad item; the run carries on), and reading the
  items the cache lacks into model input (decoded pixels, token ids);
* an **encoder** (:class:`~deepfeat.featurize.image_encoder.ImageEncoder`,
  :class:`~deepfeat.featurize.text_encoder.TextEncoder`): the network at its cut point, its
  fingerprint and space attributes, how read items are grouped into batches, and the
  forward pass of a batch.

The engine hashes every input, merges duplicates, looks the keys up in the cache and reads
and encodes only what is missing, in batches that go to the cache one by one (a killed run
loses at most the batches in flight). Where the batches run is the ``engine`` setting:
``"local"`` (CPU streams or DataLoader workers, :mod:`deepfeat.featurize.local_batches`) or
``"ray"`` (:mod:`deepfeat.featurize.ray_engine`).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepfeat.exceptions import DeepfeatError, InvalidParameterError
from deepfeat.faults import kill_point
from deepfeat.featurize.local_batches import local_batches
from deepfeat.featurize.roles import Encoder, Reader, Source
from deepfeat.store import FeatureCache, merge_orphan_journals

__all__ = ["ENGINES", "STORAGE_DTYPES", "FeaturizeResult", "FeaturizingEngine", "one_call_at_a_time"]

log = logging.getLogger(__name__)

STORAGE_DTYPES = ("float32", "float16")
ENGINES = ("local", "ray")


@dataclass
class FeaturizeResult:
    """What a ``featurize`` call produced.

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
        call), ``failed``; ``seconds``, ``images_per_second`` (featurized items per
        second of read + forward + write), ``device``, ``precision``, ``fingerprint``,
        ``cache``; and what the reader adds (texts: ``truncated``, ``max_length``,
        ``texts_per_second``).
    """

    features: np.ndarray | None
    ok: np.ndarray
    keys: list[str | None]
    failures: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def one_call_at_a_time(method: Callable) -> Callable:
    """Serialise calls on one featurizer: it holds one cache handle and lazily builds one
    network, and fitted models share a featurizer per feature space across the process
    (see :func:`deepfeat.classify.embedder.shared_featurizer`), so that one model can be
    used from several threads. Each call uses every core already (streams); a second
    thread waits for it instead of racing it for the cache's writer state."""

    @functools.wraps(method)
    def locked(self: FeaturizingEngine, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


def check_engine_options(*, batch_size: Any, storage_dtype: Any, engine: Any) -> None:
    """Raise :class:`InvalidParameterError` naming the first bad setting of the engine."""
    if engine not in ENGINES:
        raise InvalidParameterError(f"engine must be one of {ENGINES}, got {engine!r}")
    if storage_dtype not in STORAGE_DTYPES:
        raise InvalidParameterError(f"storage_dtype must be one of {STORAGE_DTYPES}, got {storage_dtype!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a positive integer, got {batch_size!r}")


class FeaturizingEngine:
    """The cache-aware featurizing loop shared by :class:`~deepfeat.featurize.Featurizer`
    and :class:`~deepfeat.featurize.text_featurizer.TextFeaturizer`.

    A subclass sets ``reader`` and ``encoder`` and the engine settings (``cache_path``,
    ``batch_size``, ``storage_dtype``, ``lock_timeout``, ``progress``, ``engine``,
    ``ray_address``) through :meth:`_start_engine`; everything else is here.
    """

    reader: Reader
    encoder: Encoder
    #: Decoding processes for the DataLoader path (``"auto"``: the encoder's CPU streams).
    num_workers: int | str = "auto"

    def _start_engine(self, *, cache: str | os.PathLike | None, batch_size: int, storage_dtype: str,
                      lock_timeout: float | None, progress: bool, engine: str, ray_address: str | None) -> None:
        self.cache_path = None if cache is None else os.fspath(cache)
        self.batch_size = batch_size
        self.storage_dtype = storage_dtype
        self.lock_timeout = lock_timeout
        self.progress = progress
        self.engine = engine
        self.ray_address = ray_address
        self.forward_passes = 0
        self._dim: int | None = None
        self._cache: FeatureCache | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ identity
    @property
    def fingerprint(self) -> str:
        """Name of the feature space in the cache (the encoder's; see
        :mod:`deepfeat.featurize.identity`)."""
        return self.encoder.fingerprint

    def space_in(self, cache: FeatureCache | None) -> str:
        """The name under which ``cache`` holds this feature space (see the encoder's
        ``space_in``: an older name of the same space is read and extended)."""
        return self.encoder.space_in(cache)

    @property
    def built(self) -> bool:
        """Whether the network is built (timing it then costs no build)."""
        return self.encoder.built

    @property
    def dim(self) -> int:
        """Embedding width (from the cache when known, else one forward pass)."""
        if self._dim is None:
            info = self.cache.space_info(self.space_in(self.cache)) if self.cache else None
            self._dim = int(info["dim"]) if info else self.encoder.probe_dim()
        return self._dim

    @property
    def cache(self) -> FeatureCache | None:
        if self.cache_path is None:
            return None
        if self._cache is None:
            self._cache = FeatureCache(self.cache_path, lock_timeout=self.lock_timeout)
        return self._cache

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ the loop
    @one_call_at_a_time
    def featurize(
        self, inputs: Sequence[Any], *, return_features: bool = True, log_failures: bool = True
    ) -> FeaturizeResult:
        """Embed ``inputs``, computing only what the cache lacks.

        Parameters
        ----------
        inputs : sequence
            Images (paths, PIL images, numpy arrays) or texts, as the reader takes them.
        return_features : bool, default=True
            ``False`` only fills the cache (memory then does not grow with the inputs).
        log_failures : bool, default=True
            Log a warning per input that could not be read; ``False`` leaves the
            reporting to the caller (the failures are in the result either way).

        Returns
        -------
        FeaturizeResult
        """
        self.reader.check_sequence(inputs)
        inputs = list(inputs)
        t_start = time.perf_counter()
        n = len(inputs)
        keys, failures = self.reader.keys(inputs)
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k is not None and k not in first:
                first[k] = i
        unique = list(first)
        cache = self.cache
        if cache is not None:
            merge_orphan_journals(cache)  # rows a killed Ray job left behind count as cached
        fp = self.space_in(cache)
        in_cache = cache.contains(fp, unique) if cache is not None else np.zeros(len(unique), bool)
        todo = [k for k, c in zip(unique, in_cache) if not c]
        kill_point("featurize.hashed")
        if not todo and cache is not None:
            cache.merge_pending()  # rows a killed run left in the journal go into the .h5 file
        computed: dict[str, np.ndarray] = {}
        bad_keys: dict[str, str] = {}
        notes: dict[str, Any] = self.reader.base_notes()
        t_feat = 0.0
        n_done = 0
        if todo:
            t0 = time.perf_counter()
            if cache is not None:
                with cache.writer():
                    # Another writer may have added rows while we waited for the lock.
                    still = ~cache.contains(fp, todo)
                    todo = [k for k, s in zip(todo, still) if s]
                    items = [inputs[first[k]] for k in todo]
                    n_done = self._compute(fp, todo, items, computed, bad_keys, notes, cache, return_features)
            else:
                items = [inputs[first[k]] for k in todo]
                n_done = self._compute(fp, todo, items, computed, bad_keys, notes, None, True)
            t_feat = time.perf_counter() - t0

        for i, k in enumerate(keys):
            if k is not None and k in bad_keys:
                failures[i] = bad_keys[k]
        ok = np.array([i not in failures for i in range(n)], dtype=bool)
        features = self._assemble(inputs, keys, ok, unique, computed, bad_keys, fp, cache) if return_features else None
        fail_list = [
            {"index": i, "path": self.reader.describe(inputs[i], i), "reason": failures[i]} for i in sorted(failures)
        ]
        summary = {
            **_counts(keys, ok, computed, bad_keys, n_done, return_features),
            "failed": len(fail_list),
            **notes,
            "seconds": round(time.perf_counter() - t_start, 3),
            "featurize_seconds": round(t_feat, 3),
        }
        rate = round(n_done / t_feat, 2) if t_feat > 0 and n_done else 0.0
        summary[self.reader.rate_key] = rate
        summary.update({"device": self.encoder.runtime.device.type, "precision": self.encoder.runtime.precision,
                        "fingerprint": fp, "cache": self.cache_path})
        summary["images_per_second"] = rate  # the key every report reads
        self.reader.log_notes(notes)
        for f_ in fail_list if log_failures else ():
            log.warning("%s: %s", f_["path"], f_["reason"])
        return FeaturizeResult(features, ok, keys, fail_list, summary)

    def _assemble(self, inputs: list[Any], keys: list[str | None], ok: np.ndarray, unique: list[str],
                  computed: dict[str, np.ndarray], bad_keys: dict[str, str], fp: str,
                  cache: FeatureCache | None) -> np.ndarray:
        """Rows aligned with the inputs: the ones just computed, the rest read from the cache."""
        dim = self._dim if self._dim is not None else (self.dim if ok.any() else 0)
        features = np.full((len(inputs), dim), np.nan, dtype=np.float32)
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
                raise DeepfeatError(f"internal error: no features for {self.reader.describe(inputs[i], i)}")
            features[i] = row
        return features

    def _compute(self, fp: str, todo: list[str], items: list[Any], computed: dict[str, np.ndarray],
                 bad: dict[str, str], notes: dict[str, Any], cache: FeatureCache | None, keep: bool) -> int:
        """Read and encode ``items`` (keys ``todo``) with the chosen engine; rows go to
        ``cache`` and/or ``computed``, failures to ``bad``, the reader's notes to ``notes``.
        Returns how many were encoded."""
        if not items:  # another writer added them while this one waited for the lock
            return 0
        source = self.reader.open(items)
        notes.update(source.notes())
        if self.engine == "ray":
            from deepfeat.featurize.ray_engine import run_on_ray

            done = run_on_ray(self, todo, self.reader.ray_items(items), computed, bad, cache, keep, space=fp)
            if computed:
                self._dim = len(next(iter(computed.values())))
            return done
        return self._run_local(fp, todo, source, computed, bad, cache, keep)

    def _run_local(self, fp: str, todo: list[str], source: Source, computed: dict[str, np.ndarray],
                   bad: dict[str, str], cache: FeatureCache | None, keep: bool) -> int:
        from tqdm.auto import tqdm

        attrs = self.encoder.space_attrs() if cache is not None else {}
        # A space keeps the storage dtype it was created with; new rows adopt it, so the
        # rows returned now equal the rows the cache returns later.
        info = cache.space_info(fp) if cache is not None else None
        store = np.dtype(info["dtype"] if info else self.storage_dtype)
        self.encoder.expect(len(todo))
        batches = local_batches(source, self.encoder, self.batch_size, self.num_workers)
        done = 0
        bar = tqdm(total=len(todo), unit=self.reader.unit, desc="featurize", file=sys.stderr,
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
                        for k, row in zip(bkeys, feats.astype(np.float32)):
                            computed[k] = row
                bar.update(len(idx))
        finally:
            bar.close()
            batches.close()
        return done


def _counts(keys: list[str | None], ok: np.ndarray, computed: dict[str, np.ndarray], bad_keys: dict[str, str],
            n_done: int, returned: bool) -> dict[str, int]:
    """The counts partition the inputs: total = featurized + cached + deduplicated + failed."""
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
    if not returned:
        n_cached = len(seen) - n_done
    return {"total": len(keys), "featurized": n_done, "cached": n_cached, "deduplicated": n_dedup}
