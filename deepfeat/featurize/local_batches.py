"""Run read + encode batches on this machine: CPU streams, or reading processes feeding the device.

* **Streams** (a CPU, ``num_workers="auto"``): one thread per core, each reading whole
  batches and running their forward pass single-threaded. No intra-op barriers to wait at:
  on a 2-core machine shared with other processes, two intra-op threads spend most of their
  time waiting for each other. Pillow, tokenizers and PyTorch release the GIL while they
  decode, tokenize and compute. A job of one batch runs on one stream too, so that a row
  does not depend on the size of the job that computed it.
* **Reading processes** (a GPU, or an explicit ``num_workers``): the source reads batches
  (an image source in DataLoader worker processes), the forward pass runs in this thread.

Batches come back in the encoder's order (:meth:`plan`), each as ``(positions, reasons,
embeddings of the good items or None)``; at most ``2 * streams`` are in flight.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from deepfeat.featurize.roles import Encoder, Source
from deepfeat.featurize.runtime import cpu_count
from deepfeat.process_state import torch_single_threaded

__all__ = ["local_batches", "n_streams", "n_workers", "ordered_map"]

T = TypeVar("T")
R = TypeVar("R")

Batch = tuple[list[int], list[str], Any]


def n_streams(encoder: Encoder, n_batches: int, num_workers: int | str = "auto") -> int:
    """Threads that each read and forward whole batches: one per core on a CPU with
    ``num_workers="auto"`` (at most one per batch), else 0 (reading processes)."""
    if num_workers != "auto" or encoder.runtime.device.type != "cpu":
        return 0
    return max(1, min(cpu_count(), n_batches))


def n_workers(encoder: Encoder, n_items: int, batch_size: int, num_workers: int | str = "auto") -> int:
    """Reading processes for the DataLoader path."""
    if num_workers != "auto":
        return int(num_workers)
    if n_items <= batch_size:
        return 0
    cores = cpu_count()
    return max(1, min(4, cores - 1)) if encoder.runtime.device.type == "cpu" else min(8, cores)


def ordered_map(fn: Callable[[T], R], jobs: Iterable[T], threads: int, prefix: str = "deepfeat-stream"
                ) -> Iterator[R]:
    """``fn`` over ``jobs`` on ``threads`` threads, single-threaded torch kernels, results
    in order; at most ``2 * threads`` jobs in flight."""
    it = iter(jobs)
    # the count is process-wide: restored when the last concurrent run ends
    with torch_single_threaded():
        ex = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=prefix)
        try:
            pending = deque(ex.submit(fn, j) for j in itertools.islice(it, 2 * threads))
            while pending:
                res = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(ex.submit(fn, nxt))
                yield res
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


def local_batches(source: Source, encoder: Encoder, batch_size: int, num_workers: int | str = "auto"
                  ) -> Iterator[Batch]:
    """Read and encode every item of ``source`` in the encoder's batches (see the module)."""
    groups = encoder.plan(len(source), batch_size, source.sizes)
    streams = n_streams(encoder, len(groups), num_workers)
    lock = threading.Lock()

    def encode(group: list[int], payload: Any, reasons: list[str]) -> Batch:
        if payload is None:  # no good item: a run of only broken files never builds the network
            return group, reasons, None
        if not encoder.ready():
            with lock:
                encoder.network()  # build once, not in every thread
        return group, reasons, encoder.encode(payload)

    if streams:
        yield from ordered_map(lambda g: encode(g, *source.read(g)), groups, streams)
    else:
        workers = n_workers(encoder, len(source), batch_size, num_workers)
        for g, payload, reasons in source.read_batches(groups, workers, encoder.runtime.device.type == "cuda"):
            yield encode(g, payload, reasons)
