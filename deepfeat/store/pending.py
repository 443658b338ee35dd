"""Journals of writers that do not hold the cache's lock (one per Ray actor), and their merge.

Each such writer appends its rows to a journal of its own in ``<cache>.d/pending/``
(:func:`open_pending_journal`) and holds an ``flock`` on it while it lives. The rows
become part of the cache when a writer merges the journals in as one new segment
(:func:`merge_orphan_journals`), skipping keys already stored, and deletes them. A journal
whose writer died unmerged is found and merged by the next run.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from deepfeat.exceptions import DeepfeatError
from deepfeat.store.format import JOURNAL_SUFFIX, PENDING_DIR
from deepfeat.store.journal import JournalWriter
from deepfeat.store.segments import segment_dir

if TYPE_CHECKING:
    from deepfeat.store.writer import FeatureCache

__all__ = ["merge_orphan_journals", "locked_journals", "open_pending_journal", "pending_dir"]

log = logging.getLogger(__name__)


def pending_dir(cache_path: str) -> str:
    """Where writers without the cache lock keep their journals until they are merged in."""
    return os.path.join(segment_dir(cache_path), PENDING_DIR)


def open_pending_journal(cache_path: str, *, fsync: bool = True) -> JournalWriter:
    """A new journal of this process's own for rows of cache ``cache_path``, locked while open.

    The file is named after the process id, so that it says which process writes it.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from deepfeat.store import FeatureCache
    >>> cache = FeatureCache(os.path.join(tempfile.mkdtemp(), "c.h5"))
    >>> with open_pending_journal(cache.path) as journal:
    ...     journal.append("s", {}, ["0" * 32], np.ones((1, 2), np.float32))
    >>> merge_orphan_journals(cache), cache.contains("s", ["0" * 32]).tolist()
    (1, [True])
    """
    folder = pending_dir(cache_path)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{os.getpid()}-{uuid.uuid4().hex}{JOURNAL_SUFFIX}")
    return JournalWriter(path, fsync=fsync, exclusive=True)


@contextlib.contextmanager
def locked_journals(paths: Sequence[str]) -> Iterator[list[str]]:
    """Lock each journal without waiting; yield those locked (their writers are gone)."""
    held: list[tuple[str, int]] = []
    try:
        for p in paths:
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # a live writer holds it
                continue
            held.append((p, fd))
        yield [p for p, _ in held]
    finally:
        for _, fd in held:
            os.close(fd)


def merge_orphan_journals(cache: FeatureCache, also: Sequence[str] | None = None) -> int:
    """Merge the pending journals no live writer holds (and ``also``) into ``cache``; delete them.

    Returns rows added. Never waits for live writers and never fails on a read-only
    folder (the rows then stay pending).
    """
    folder = pending_dir(cache.path)
    found = sorted(glob.glob(os.path.join(glob.escape(folder), "*" + JOURNAL_SUFFIX)))
    also = [p for p in (also or []) if os.path.exists(p)]
    if not found and not also:
        return 0
    with locked_journals([p for p in found if p not in also]) as orphans:
        todo = list(also) + orphans
        if not todo:
            return 0
        try:
            added = cache.merge_journals(todo, kind="w")
        except (OSError, DeepfeatError) as exc:
            log.info("%s: pending journals not merged in now (%s)", cache.path, exc)
            return 0
        for p in todo:
            with contextlib.suppress(OSError):
                os.remove(p)
    log.debug("%s: merged %d rows from %d pending journal(s)", cache.path, added, len(todo))
    return added
