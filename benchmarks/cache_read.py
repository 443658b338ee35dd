"""FeatureCache.read of 100,000 rows in random order vs h5py's sequential read.

Usage: python benchmarks/cache_read.py [--quick | --full] [--json] [other `deepfeat bench` options]
"""

import sys

from _cli import run_part

if __name__ == "__main__":
    sys.exit(run_part("cache"))
