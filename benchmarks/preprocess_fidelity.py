"""Embeddings of the fast preprocessing against the plain pipeline, on Oxford 17.

Usage: python benchmarks/preprocess_fidelity.py [EVERY_NTH]   (1 = all 1,360 photos)
Prints mean/min cosine to the reference, the bilinear-without-antialias control, and
held-out accuracy (stratified 50/50 split) of each.
"""

import json
import os
import sys
import tempfile

from deepfeat.benchmarking.fidelity import preprocessing_fidelity
from deepfeat.benchmarking.images import bench_images

if __name__ == "__main__":
    step = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    with tempfile.TemporaryDirectory() as tmp:
        imgs = bench_images(tmp, 1360)
        paths, labels = imgs.paths[::step], imgs.labels[::step]
        print("load average before:", os.getloadavg(), "source:", imgs.source, file=sys.stderr)
        result = preprocessing_fidelity(paths, labels)
        result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
        print(json.dumps(result, indent=2))
