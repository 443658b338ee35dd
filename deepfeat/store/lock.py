"""One writer at a time: an advisory ``flock`` on ``<cache>.lock``.

The lock is released by the kernel when the holding process dies, even by SIGKILL, so
a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from deepfeat.exceptions import CacheLockedError
from deepfeat.store.format import LOCK_SUFFIX

__all__ = ["WriterLock"]


class WriterLock:
    """Exclusive writer lock for a cache file.

    Parameters
    ----------
    cache_path : str
        The cache file; the lock lives beside it as ``<cache_path>.lock``.
    timeout : float or None
        Seconds to wait for another writer to finish; ``None`` waits for ever, ``0``
        fails at once.
    """

    def __init__(self, cache_path: str, timeout: float | None = 30.0) -> None:
        self.cache_path = cache_path
        self.path = cache_path + LOCK_SUFFIX
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        delay = 0.05
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if deadline is not None and time.monotonic() >= deadline:
                holder = _read_holder(fd)
                os.close(fd)
                raise CacheLockedError(
                    f"{self.cache_path}: another process{holder} is writing to this cache; "
                    f"waited {self.timeout:g} s. Wait for it to finish, raise the lock timeout, "
                    "or use another cache file."
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
