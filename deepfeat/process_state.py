"""The few places where deepfeat must touch process-wide state, each scoped for threads.

deepfeat runs inside other people's processes (notebooks, web servers, batch jobs) and often
on several threads of its own (decoding streams, a server's executor). Python's warnings
filters, torch's intra-op thread count and a logger's configuration are process-wide, so a
plain save-change-restore from two threads at once interleaves: one thread restores a state
that still holds its neighbour's change, and the process keeps it for good (a featurize run
once left every later warning of its caller raised as an exception). The context managers
here make deepfeat's own changes nest: one process-wide lock orders every change of the
warnings filters, and a reference count restores torch's thread count only when the last
concurrent user leaves. Worker threads never change warnings filters at all.

Code outside deepfeat that changes the same state from another thread at the same moment
is still not ordered by this lock; docs/reliability.md (Threads) says so.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import warnings
from collections.abc import Iterator

__all__ = [
    "filters_swapped_inside",
    "forked_torch_rng",
    "ignoring_warnings",
    "keeping_signal_handler",
    "quieter_logs",
    "torch_single_threaded",
]

# Re-entrant: a scope that ignores warnings may call code that opens another.
_WARNINGS_LOCK = threading.RLock()
_THREADS_LOCK = threading.Lock()
_threads_users = 0
_threads_before: int | None = None


@contextlib.contextmanager
def ignoring_warnings(
    *categories: type[Warning], message: str | None = None
) -> Iterator[list[warnings.WarningMessage]]:
    """Ignore ``categories`` (all warnings when none) inside the block; yield what was caught.

    Every warning the block raises is recorded into the yielded list (so a caller can ask,
    e.g., whether a refit converged) and none of them is shown; warnings of other categories
    are re-issued after the block, as the caller's filters decide. The filters are restored
    on exit, under a lock shared by every deepfeat scope, so concurrent scopes never restore
    each other's state. Do not use this in code that runs on many threads at once in the hot
    path: the lock serialises the blocks.

    Parameters
    ----------
    *categories : type of Warning
        Categories to swallow; the others are shown after the block.
    message : str, optional
        Only warnings whose message matches this regular expression (at the start) are
        swallowed.

    Examples
    --------
    >>> import warnings
    >>> before = list(warnings.filters)
    >>> with ignoring_warnings(RuntimeWarning) as caught:
    ...     warnings.warn("noisy", RuntimeWarning)
    >>> len(caught), warnings.filters == before
    (1, True)
    """
    swallow = categories or (Warning,)
    with _WARNINGS_LOCK:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    for w in caught:
        hidden = issubclass(w.category, swallow) and (
            message is None or re.match(message, str(w.message)) is not None
        )
        if not hidden:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def filters_swapped_inside() -> threading.RLock:
    """The lock of :func:`ignoring_warnings`, for calls into code that swaps the warnings
    filters itself (scikit-learn's ``check_array`` runs ``catch_warnings`` on every call):
    deepfeat's threads then take turns there instead of restoring each other's filters.

    Examples
    --------
    >>> with filters_swapped_inside():
    ...     pass
    """
    return _WARNINGS_LOCK


@contextlib.contextmanager
def torch_single_threaded() -> Iterator[None]:
    """Run torch's intra-op work single-threaded inside the block, then restore the count.

    deepfeat's CPU streams each forward a batch on one core (no intra-op barriers to wait
    at); torch's thread count is process-wide, so concurrent blocks share one saved value
    and the last one out restores it.
    """
    global _threads_users, _threads_before
    import torch

    with _THREADS_LOCK:
        if _threads_users == 0:
            _threads_before = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads_users += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_users -= 1
            if _threads_users == 0 and _threads_before is not None:
                torch.set_num_threads(_threads_before)
                _threads_before = None


class _ThreadQuiet(logging.Filter):
    """Drops records below a level, only for the threads inside a :func:`quieter_logs` block."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        below = getattr(self.local, "below", None)
        return below is None or record.levelno >= below


_LOG_LOCK = threading.Lock()
_log_filters: dict[str, tuple[_ThreadQuiet, int]] = {}


def _loggers_under(prefix: str) -> list[logging.Logger]:
    names = [
        n for n, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger) and (n == prefix or n.startswith(prefix + "."))
    ]
    return [logging.getLogger(n) for n in sorted(set(names) | {prefix})]


@contextlib.contextmanager
def quieter_logs(prefix: str, below: int = logging.WARNING) -> Iterator[None]:
    """Drop log records below ``below`` from the loggers under ``prefix``, for this thread.

    A logger's level is process-wide: setting it would silence every other thread (and two
    threads restoring it out of order would leave it changed). Instead each logger under
    ``prefix`` (a logger's filters see only its own records, not its children's) gets a
    filter that looks at a thread-local setting, so only the calling thread is quieter; the
    first block adds the filters and the last one removes them.

    Examples
    --------
    >>> import logging
    >>> with quieter_logs("deepfeat.classify"):
    ...     logging.getLogger("deepfeat.classify").filters != []
    True
    >>> logging.getLogger("deepfeat.classify").filters
    []
    """
    with _LOG_LOCK:
        filters = []
        for logger in _loggers_under(prefix):
            filt, users = _log_filters.get(logger.name, (None, 0))
            if filt is None:
                filt = _ThreadQuiet()
                logger.addFilter(filt)
            _log_filters[logger.name] = (filt, users + 1)
            filters.append((logger, filt))
    outer = [getattr(f.local, "below", None) for _, f in filters]
    for (_, filt), old in zip(filters, outer):
        filt.local.below = below if old is None else max(old, below)
    try:
        yield
    finally:
        for (_, filt), old in zip(filters, outer):
            filt.local.below = old
        with _LOG_LOCK:
            for logger, filt in filters:
                _, users = _log_filters[logger.name]
                if users == 1:
                    logger.removeFilter(filt)
                    del _log_filters[logger.name]
                else:
                    _log_filters[logger.name] = (filt, users - 1)


@contextlib.contextmanager
def keeping_signal_handler(name: str) -> Iterator[None]:
    """Put the handler of signal ``name`` back as it was when the block ends.

    torch's DataLoader installs a SIGCHLD handler (to notice dead worker processes) the first
    time it starts workers from the main thread, and leaves it for good. Signal handlers can
    only be set from the main thread, so elsewhere this does nothing.
    """
    signum = getattr(signal, name, None)
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signum) if (signum is not None and main) else None
    try:
        yield
    finally:
        if before is not None and signal.getsignal(signum) is not before:
            signal.signal(signum, before)


_RNG_LOCK = threading.RLock()


@contextlib.contextmanager
def forked_torch_rng(devices: list | None = None) -> Iterator[None]:
    """``torch.random.fork_rng`` whose blocks run one at a time in this process.

    Torch's CPU generator is process-wide, so two threads forking it at once restore each
    other's state: the caller's generator would be left advanced. Blocks that draw from it
    (building a network initialises its layers; fine-tuning seeds every epoch) therefore
    take one lock, and concurrent ones wait for each other.
    """
    import torch

    with _RNG_LOCK, torch.random.fork_rng(devices=[] if devices is None else devices):
        yield
