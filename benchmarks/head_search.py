"""Time of the default head search (build_search) as the number of cached embeddings grows.

Usage: python benchmarks/head_search.py [--quick | --full] [--json] [other `deepfeat bench` options]
"""

import sys

from _cli import run_part

if __name__ == "__main__":
    sys.exit(run_part("search"))
