"""Every part of the benchmark (the same as ``deepfeat bench`` / ``make bench``).

Usage: python benchmarks/run_all.py [--quick | --full] [--json] [--workdir DIR] ...
"""

import sys

from deepfeat.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
