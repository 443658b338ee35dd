"""Peak RSS of featurizing N small and 10 N images in fresh processes.

Usage: python benchmarks/peak_memory.py [--quick | --full] [--json] [other `deepfeat bench` options]
"""

import sys

from _cli import run_part

if __name__ == "__main__":
    sys.exit(run_part("memory"))
