"""Time and bytes written to add 5 rows to caches of 10,000, 100,000 and 1,000,000 rows.

Usage: python benchmarks/cache_write.py [--sizes 10000,100000,1000000] [--dim 256] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from deepfeat.benchmarking.cache_write import format_cache_write, measure_cache_write


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--folder", default=None, help="where to build the caches (default: a temp folder)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    res = measure_cache_write(tuple(int(s) for s in a.sizes.split(",")), dim=a.dim, folder=a.folder)
    print(json.dumps(res, indent=2) if a.json else format_cache_write(res))
    worst = max(r["seconds"] for r in res["rows"])
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
