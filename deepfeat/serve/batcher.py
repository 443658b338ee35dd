"""Micro-batching: concurrent requests share forward passes through one worker task.

Requests *reserve* room for their images first (:meth:`MicroBatcher.reserve`): when the
images admitted and not yet answered would exceed ``max_queue``, the request is refused at
once (the server answers 503 with ``Retry-After``) instead of waiting in a queue that grows
without end. Admitted images wait in an :class:`asyncio.Queue`; one worker task takes the
first, waits up to ``wait_s`` for more (at most ``max_batch``), and runs the batch in a
single worker thread, so the event loop stays free to accept and refuse requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MicroBatcher", "QueueFull"]

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The server already holds ``max_queue`` images."""


@dataclass
class _Item:
    pixels: np.ndarray | tuple[np.ndarray, ...]
    future: asyncio.Future = field(repr=False)


def _stack(items: Sequence[_Item]) -> np.ndarray | tuple[np.ndarray, ...]:
    """One batch array, or one per input where each image holds several crops."""
    first = items[0].pixels
    if isinstance(first, tuple):
        return tuple(np.stack([it.pixels[k] for it in items]) for k in range(len(first)))
    return np.stack([it.pixels for it in items])


class MicroBatcher:
    """Collect single images from many requests into batches for ``predict``.

    Parameters
    ----------
    predict : callable
        ``predict(batch)`` with ``batch`` a uint8 array ``(N, 3, H, W)`` (or a tuple of
        them, when each image was queued as a tuple of crops); returns a sequence of ``N``
        results. Runs in a worker thread.
    max_batch : int
    wait_s : float
        Wait after the first image of a batch for others to join.
    max_queue : int
        Most images admitted and not yet answered.
    """

    def __init__(
        self, predict: Callable[[np.ndarray], Sequence[Any]], *, max_batch: int, wait_s: float,
        max_queue: int,
    ) -> None:
        self.predict = predict
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.max_queue = max_queue
        self.pending = 0
        self.batches = 0
        self.images = 0
        self.compute_seconds = 0.0  # time spent in ``predict``: throughput is images / this
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepfeat-serve")

    # ------------------------------------------------------------------ lifecycle
    def _ensure_started(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._work(self._queue), name="deepfeat-batcher")
        assert self._queue is not None
        return self._queue

    async def start(self) -> None:
        self._ensure_started()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    @property
    def throughput(self) -> dict[str, Any]:
        """Images answered, batches run, seconds in ``predict`` and images per such second."""
        secs = self.compute_seconds
        return {"images": self.images, "batches": self.batches, "compute_seconds": round(secs, 3),
                "images_per_second": round(self.images / secs, 2) if secs > 0 else None}

    @property
    def queued(self) -> int:
        """Images waiting in the queue (not counting a batch being computed)."""
        return 0 if self._queue is None else self._queue.qsize()

    # ------------------------------------------------------------------ admission
    def reserve(self, n: int) -> None:
        """Admit ``n`` images or raise :class:`QueueFull` (never waits)."""
        if self.pending + n > self.max_queue:
            raise QueueFull(
                f"the server holds {self.pending} images, at most {self.max_queue}: try again shortly"
            )
        self.pending += n

    def release(self, n: int) -> None:
        """Give back room reserved for images that will not be submitted."""
        self.pending = max(0, self.pending - n)

    def enqueue(self, pixels: np.ndarray | tuple[np.ndarray, ...]) -> asyncio.Future:
        """Queue one reserved image (``(3, H, W)`` uint8, or a tuple of crops); the future
        gets its result.

        Synchronous, so a reserved image is either queued or still the caller's to
        :meth:`release`: a cancelled request cannot leave room counted twice or lost.
        From here on the worker gives the room back, answered or cancelled.
        """
        queue = self._ensure_started()
        fut = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Item(pixels, fut))
        return fut

    async def submit(self, pixels: np.ndarray | tuple[np.ndarray, ...]) -> Any:
        """Predict one reserved image and return its result."""
        return await self.enqueue(pixels)

    # ------------------------------------------------------------------ worker
    async def _next_batch(self, queue: asyncio.Queue) -> list[_Item]:
        loop = asyncio.get_running_loop()
        batch = [await queue.get()]
        deadline = loop.time() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _work(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch(queue)
            live = [it for it in batch if not it.future.done()]  # a client may have gone
            try:
                if live:
                    x = _stack(live)
                    t0 = loop.time()
                    results = await loop.run_in_executor(self._executor, self.predict, x)
                    self.compute_seconds += loop.time() - t0
                    for it, res in zip(live, results):
                        if not it.future.done():
                            it.future.set_result(res)
                    self.batches += 1
                    self.images += len(live)
            except asyncio.CancelledError:
                for it in live:
                    if not it.future.done():
                        it.future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - one failed batch must not stop the worker
                log.exception("prediction of a batch of %d images failed", len(live))
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(exc)
            finally:
                self.pending = max(0, self.pending - len(batch))
