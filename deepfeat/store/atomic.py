"""File operations that make a cache's writes durable and atomic.

A new file is written under a temporary name beside its destination, flushed to disk and
renamed over it (:func:`replacing`); the folder is flushed after the rename
(:func:`fsync_dir`). A file's version is told by its inode, mtime and size
(:func:`file_sig`), so a reader notices that a writer replaced it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import shutil
import traceback
from collections.abc import Iterator

__all__ = ["check_free_space", "clear_frames", "file_sig", "fsync_dir", "link_or_copy", "replacing",
           "temporary_name"]

log = logging.getLogger(__name__)

_COUNTER = itertools.count()


def temporary_name(dst: str) -> str:
    """A name beside ``dst`` that no other process or call of this one uses."""
    return f"{dst}.tmp-{os.getpid()}-{next(_COUNTER)}"


def file_sig(path: str) -> tuple[int, int, int] | None:
    """Identity of a file's current version (a replaced file has another inode)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@contextlib.contextmanager
def replacing(dst: str) -> Iterator[str]:
    """A temporary name beside ``dst``: what the block writes there is fsynced and then
    atomically replaces ``dst`` (its folder fsynced too); on any error the temporary file
    is removed and ``dst`` is left as it was."""
    tmp = temporary_name(dst)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(dst)


def link_or_copy(src: str, dst: str) -> None:
    """Give ``src``'s content a second name: a hard link, or a copy where links are refused."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EACCES):
            raise
        log.info("%s: hard links refused (%s); copying the file once", dst, exc.strerror)
        tmp = dst + f".tmp-{os.getpid()}"
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dst)


def clear_frames(exc: BaseException | None) -> None:
    """Free the frames of an exception chain (and the HDF5 objects they hold) now."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def check_free_space(path: str, need: int) -> None:
    """Raise ``OSError(ENOSPC)`` when the folder of ``path`` has less than ``need`` bytes free."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device: the checkpoint needs about {need / 1e6:.1f} MB in {folder}, "
            f"{free / 1e6:.1f} MB are free",
        )


def fsync_dir(path: str) -> None:
    """Flush the folder holding ``path`` (a rename in it is then durable); best effort."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
