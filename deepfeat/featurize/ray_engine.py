"""Featurize on a Ray cluster (``Featurizer(engine="ray")``, ``deepfeat featurize --engine ray``).

The driver hashes the listing and looks the keys up in the cache as the local engine does;
only the missing images go to Ray Data: ``map_batches`` over an actor pool, one model per
actor (a GPU per actor where the cluster has GPUs). CPU actors share the cluster's cores:
each runs ``round(CPUs / actors)`` calls at once, every call one single-threaded stream that
decodes and forwards its batch (on 2 CPUs: one actor, two calls side by side; on 32 CPUs: 31
actors, one call each). Where Ray Data cannot run an actor's calls concurrently and an actor
should use several cores, it runs one call at a time with a stream per core of its node.
Each actor appends its rows to a journal
of its own in ``<cache>.d/pending/`` (:func:`~deepfeat.store.open_pending_journal`:
checksummed, fsynced before the batch is reported done, locked while the actor lives).
When the dataset is consumed the driver merges the journals into one new segment of the
cache (:func:`~deepfeat.store.merge_orphan_journals`), skipping keys already stored, and
deletes them.

Faults: Ray restarts a killed actor and retries its batch; the rows of the batches it
finished are in its journal, the retried batch is written again by another actor and
merged once. A killed driver leaves the journals behind, unlocked; the next run (either
engine) merges them in before deciding what to compute, so it computes only what is missing.
The cache must therefore be on a filesystem every node sees, at the same path.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from deepfeat.exceptions import DeepfeatError
from deepfeat.store import merge_orphan_journals, open_pending_journal

__all__ = ["init_ray", "run_on_ray"]

log = logging.getLogger(__name__)


#: Featurizer batches per actor call when an actor runs one call at a time: enough for
#: the actor's streams to work in parallel.
_BATCHES_PER_CALL = 4
#: ... and when its calls run side by side, one stream each: small, so that the last call
#: of a job keeps one core busy for little longer than the others.
_BATCHES_PER_CONCURRENT_CALL = 2


class _Embedder:
    """One Ray actor: one model, one journal; embeds batches of ``{"key", "path"}`` rows.

    With ``single_stream`` each call decodes and forwards its batch single-threaded in the
    calling thread; Ray Data may run several such calls at once in the actor (the local
    engine's streams, kept busy across calls). Otherwise each call runs the local engine's
    streams itself, one per core of the node.
    """

    def __init__(self, cls: type, spec: dict[str, Any], overrides: dict[str, Any], cache_path: str | None,
                 attrs: dict[str, Any], threads: int, n_images: int,
                 space: str | None = None, single_stream: bool = False) -> None:
        import inspect

        import torch

        torch.set_num_threads(max(1, threads))  # the actor's own process: its threads are ours
        if single_stream:  # decode and forward in the calling thread
            overrides = {**overrides, "num_workers": 0}
        # the driver's featurizer class (its reader and encoder): an image Featurizer, or a
        # TextFeaturizer whose "paths" are the texts themselves
        accepted = set(inspect.signature(cls).parameters)
        self.featurizer = cls.from_spec(spec, **{k: v for k, v in overrides.items() if k in accepted})
        self.featurizer.prepare(n_images)  # build (and trace, as the local engine would) once
        self.fingerprint = space or self.featurizer.fingerprint
        self.attrs = attrs
        # named by pid (a journal says which process writes it: the fault tests kill it) and
        # locked while the actor lives; concurrent calls append whole records, one at a time
        self._journal = open_pending_journal(cache_path) if cache_path is not None else None
        self.journal = self._journal.path if self._journal is not None else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = [str(k) for k in batch["key"]]
        paths = [str(p) for p in batch["path"]]
        res = self.featurizer.featurize(paths, return_features=True)
        reasons = [""] * len(keys)
        for f in res.failures:
            reasons[f["index"]] = f["reason"] or "failed"
        for i, k in enumerate(res.keys):
            if not reasons[i] and k != keys[i]:
                reasons[i] = "the file changed while the job ran"
        ok = [i for i, r in enumerate(reasons) if not r]
        out: dict[str, Any] = {"key": np.array(keys), "reason": np.array(reasons, dtype=object),
                               "journal": np.array([self.journal or ""] * len(keys), dtype=object)}
        store = np.dtype(self.featurizer.storage_dtype)
        if self._journal is not None:
            if ok:  # durable before the batch counts as done
                self._journal.append(self.fingerprint, self.attrs, [keys[i] for i in ok],
                                     res.features[ok].astype(store))
        else:
            out["features"] = res.features.astype(np.float32)
        return out


def init_ray(address: str | None) -> None:
    """Connect to the Ray cluster at ``address``, or start a local instance (once)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the library never prints; Ray Data logs to its own files
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # Our own instance: Ray runs its workers at nice 15 by default (to favour its raylet),
        # which on a machine shared with other work starves the actors; run them at 0.
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _system_config={"worker_niceness": 0})


def _actor_pool(ray: Any, actors: int, calls: int) -> tuple[Any, int]:
    """A fixed pool of ``actors`` running ``calls`` UDF calls each at once, and the calls
    granted (1 where this Ray Data cannot run an actor's calls concurrently)."""
    if calls > 1:
        try:
            return ray.data.ActorPoolStrategy(
                size=actors, max_concurrent_calls_per_actor=calls, enable_true_multi_threading=True,
                max_tasks_in_flight_per_actor=2 * calls,
            ), calls
        except TypeError:  # Ray Data before concurrent actor calls
            log.debug("this Ray Data runs one call per actor at a time")
    return ray.data.ActorPoolStrategy(size=actors), 1


def run_on_ray(featurizer: Any, todo: list[str], paths: list[str], computed: dict[str, np.ndarray],
               bad: dict[str, str], cache: Any, keep: bool, space: str | None = None) -> int:
    """Embed the images ``paths`` (keys ``todo``) on Ray; return how many were embedded.

    ``featurizer`` is the driver's :class:`~deepfeat.featurize.engine.FeaturizingEngine`;
    each actor rebuilds one of its class from its ``spec`` (so this module imports no
    featurizer, and the featurizers import it without a cycle). Texts go as ``paths``.

    Rows go to ``cache`` (merged in before returning); without a cache they come back in
    ``computed``. Failed images are recorded in ``bad`` and never stop the job. ``space`` is the
    cache space the rows go to (default: the featurizer's fingerprint).
    """
    space = space or featurizer.fingerprint
    try:
        import ray
    except ImportError:
        raise DeepfeatError("engine='ray' needs Ray Data: pip install 'deepfeat[ray]'") from None
    init_ray(featurizer.ray_address)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    if gpus:
        actors, per_actor = gpus, {"num_gpus": 1, "num_cpus": 1}
        device = "cuda"
    else:
        # leave a CPU to Ray Data's own tasks: a pool that claims every CPU can hang
        actors, per_actor = max(1, cpus - 1), {"num_cpus": 1}
        device = "cpu"
    actors = max(1, min(actors, -(-len(todo) // featurizer.batch_size)))
    # CPU actors share the cluster's cores: each runs ``wanted`` single-threaded calls at once
    # (2 CPUs: one actor, two calls), so no core waits while a call's last batch finishes
    wanted = 1 if gpus else max(1, round(cpus / actors))
    strategy, calls = _actor_pool(ray, actors, wanted)
    single_stream = not gpus and calls == wanted
    per_call = featurizer.batch_size * (_BATCHES_PER_CALL if calls == 1 else _BATCHES_PER_CONCURRENT_CALL)
    # inside an actor the featurizer runs as the local engine does, with one stream per call
    # (single_stream) or one per core of the node
    overrides = {"device": device, "precision": featurizer.runtime.precision, "cache": None,
                 "batch_size": featurizer.batch_size, "num_workers": getattr(featurizer, "num_workers", 0),
                 "jit": getattr(featurizer, "jit", False), "max_pixels": getattr(featurizer, "max_pixels", None)}
    attrs = featurizer.encoder.space_attrs()
    cache_path = cache.path if cache is not None else None
    # one block per call when calls run side by side (each is a task: no call waits for a
    # block another call holds); a few large blocks per actor otherwise
    n_calls = -(-len(todo) // per_call)
    blocks = n_calls if calls > 1 else min(n_calls, 4 * actors)
    ds = ray.data.from_items([{"key": k, "path": p} for k, p in zip(todo, paths)],
                             override_num_blocks=max(1, blocks))
    out = ds.map_batches(
        _Embedder,
        fn_constructor_kwargs={"cls": type(featurizer), "spec": featurizer.spec, "overrides": overrides, "cache_path": cache_path,
                               "attrs": attrs, "space": space, "threads": per_actor["num_cpus"],
                               "n_images": len(todo), "single_stream": single_stream},
        batch_size=per_call,
        batch_format="numpy",
        compute=strategy,
        **per_actor,
    )
    journals: set[str] = set()
    done = 0
    seen: set[str] = set()
    for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
        for i, (k, reason) in enumerate(zip(batch["key"], batch["reason"])):
            k = str(k)
            if k in seen:  # a batch retried after its actor died may come back twice
                continue
            seen.add(k)
            if reason:
                bad[k] = str(reason)
                continue
            done += 1
            if cache is None or keep and "features" in batch:
                computed[k] = batch["features"][i]
        journals.update(j for j in batch["journal"] if j)
    if cache is not None:
        merge_orphan_journals(cache, also=sorted(journals))
        if keep:  # the rows this job computed, as the local engine hands them back
            ok = [k for k in seen if k not in bad]
            vals, found = cache.read(space, ok)
            computed.update((k, v) for k, v, f in zip(ok, vals, found) if f)
    featurizer.forward_passes += done
    return done
