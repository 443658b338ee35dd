"""Where the test suite's CPU goes: a pytest plugin, and a summary of what it wrote.

Wall-clock durations (``--durations``) mean little on a shared machine; CPU seconds do. The
plugin records, for each test, the CPU seconds of the test process and of the child
processes it waited for (setup, call and teardown: a module fixture counts in the test that
first needs it) as one JSON line in ``$CPU_TIMES.<xdist worker>``::

    PYTHONPATH=tests CPU_TIMES=/tmp/cpu python -m pytest -p cpu_times -m "not slow" -n 2 --dist loadfile
    python tests/cpu_times.py /tmp/cpu        # per file, then the costliest tests

Not collected (the name does not start with ``test_``) and not loaded unless asked for.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import resource
import sys
import time

import pytest


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    cpu, wall = _cpu(), time.perf_counter()
    yield
    row = {"id": item.nodeid, "cpu": round(_cpu() - cpu, 3), "wall": round(time.perf_counter() - wall, 3)}
    out = os.environ.get("CPU_TIMES", "cpu-times") + "." + os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(out, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def summary(prefix: str, files: int = 25, tests: int = 30) -> str:
    """CPU seconds per test file (largest first), then the ``tests`` costliest tests."""
    rows = [json.loads(ln) for p in sorted(glob.glob(prefix + ".*")) for ln in open(p)]
    per, n = collections.Counter(), collections.Counter()
    for r in rows:
        f = r["id"].split("::")[0]
        per[f] += r["cpu"]
        n[f] += 1
    total = sum(per.values())
    out = [f"{total:.0f} CPU s in {len(rows)} tests; the largest file is "
           f"{max(per.values(), default=0) / max(total, 1e-9):.0%} of it", "   CPU s  tests  file"]
    out += [f"{s:8.1f}  {n[f]:5d}  {f}" for f, s in per.most_common(files)]
    out += ["   CPU s   wall s  test"]
    out += [f"{r['cpu']:8.1f} {r['wall']:8.1f}  {r['id']}" for r in sorted(rows, key=lambda r: -r["cpu"])[:tests]]
    return "\n".join(out)


if __name__ == "__main__":
    print(summary(sys.argv[1] if len(sys.argv) > 1 else "cpu-times"))
