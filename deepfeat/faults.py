"""Test-only fault injection: kill the process with SIGKILL at a named point.

The crash-safety tests need to stop a featurize run at exact moments (between the
journal write and its fsync, inside a checkpoint, after the atomic rename...). The cache
and the featurizer call :func:`kill_point` at those moments. Unless the environment
variable ``DEEPFEAT_TEST_KILL_AT`` is set when this module is imported, the call is a
single comparison and nothing else happens.

``DEEPFEAT_TEST_KILL_AT="<point>:<n>"`` sends SIGKILL to the current process the ``n``-th
time (1-based) execution reaches ``<point>``. :data:`KILL_POINTS` lists the points.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

__all__ = ["ENV_VAR", "KILL_POINTS", "kill_point"]

ENV_VAR = "DEEPFEAT_TEST_KILL_AT"

#: Named points, in the order a run meets them.
KILL_POINTS = {
    "writer.locked": "writer lock acquired, before recovering the journal",
    "featurize.hashed": "every input hashed and looked up, before taking the writer lock",
    "featurize.forwarded": "a batch went through the network, before it is written",
    "journal.opened": "journal file opened for appending, nothing written yet",
    "journal.torn": "half of a journal record written (a torn record), then killed",
    "journal.appended": "a journal record written and fsynced",
    "checkpoint.begin": "checkpoint read the journal, before taking the commit lock",
    "checkpoint.copied": "commit lock held, segment folder made, the new segment not yet created",
    "checkpoint.resized": "the new segment's datasets grown, before the rows are written",
    "checkpoint.merged": "one journal record merged into the open new segment",
    "checkpoint.written": "new segment closed, before its read-back and fsync",
    "checkpoint.segment": "new segment renamed into the segment folder, manifest not yet replaced",
    "checkpoint.linked": "a one-file cache hard-linked as the first segment, manifest not yet replaced",
    "checkpoint.replaced": "manifest (or a new cache's first file) renamed into place, journal not yet emptied",
    "checkpoint.done": "journal emptied",
}


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    point, _, count = spec.rpartition(":")
    if point not in KILL_POINTS or not count.isdigit() or int(count) < 1:
        raise ValueError(
            f"{ENV_VAR}={spec!r}: expected '<point>:<n>' with a point from {sorted(KILL_POINTS)}"
        )
    return point, int(count)


_TARGET = _parse(os.environ.get(ENV_VAR))
_seen = 0


def kill_point(name: str, before: Callable[[], object] | None = None) -> None:
    """SIGKILL this process if ``name`` is the armed point and this is its ``n``-th visit.

    ``before`` runs just before the kill (e.g. to leave half a record on disk).
    """
    global _seen
    if _TARGET is None or _TARGET[0] != name:
        return
    _seen += 1
    if _seen == _TARGET[1]:
        if before is not None:
            before()
        os.kill(os.getpid(), signal.SIGKILL)
