"""Sentences/s of deepfeat's text featurizer vs sentence-transformers and a naive transformers loop.

The measurement is :mod:`deepfeat.benchmarking.text_speed` (also ``deepfeat bench --parts
text``); this script prints it for ``--n`` sentences.

Usage: python benchmarks/text_speed.py [--n 10000] [--batch-size 32] [--json]
Targets (issue 27): deepfeat >= 1.0x sentence-transformers, >= 2x the naive loop.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

#: ``../shared/datasets`` beside the repository, or $DEEPFEAT_DATASETS (as in tests/conftest.py)
DATASETS = Path(os.environ.get("DEEPFEAT_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="sentences (default: 10,000)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    from deepfeat.benchmarking.text_speed import measure_text_speed, real_sentences

    res = measure_text_speed(real_sentences(args.n, DATASETS), args.batch_size)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{res['sentences']} sentences, batch {res['batch_size']}, {res['precision']}, on {res['cpu']} "
          f"(torch threads {res['torch_threads']}); rows agree with sentence-transformers to "
          f"{res['max_abs_diff_vs_sentence_transformers']:.1e}")
    for k, v in res["sentences_per_second"].items():
        print(f"  {k:<32} {v:8.1f} sentences/s")
    for k, v in res["ratios"].items():
        print(f"  {k:<44} {v:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
