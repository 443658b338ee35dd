"""Images/s of deepfeat end to end vs the model-only ceiling, a naive loop and the DataLoader tutorial.

Usage: python benchmarks/throughput.py [--quick | --full] [--json] [other `deepfeat bench` options]
"""

import sys

from _cli import run_part

if __name__ == "__main__":
    sys.exit(run_part("throughput"))
