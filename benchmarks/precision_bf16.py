"""bf16 vs fp32 embeddings: mean cosine and downstream accuracy on the same photos.

Usage: python benchmarks/precision_bf16.py [--quick | --full] [--json] [other `deepfeat bench` options]
"""

import sys

from _cli import run_part

if __name__ == "__main__":
    sys.exit(run_part("precision"))
