"""CPU time per image of each featurize stage, and the end-to-end/ceiling bound it implies.

Usage: python benchmarks/profile_stages.py [N_IMAGES] [BACKBONE]
Prints the load averages and the number of other running processes before and after:
the figures are CPU time of one thread, which other work on the same cores still inflates.
(random weights for any backbone other than the offline default).
For a sampling profile of a real run: py-spy record --threads -- deepfeat featurize DIR --cache c.h5
"""

import json
import sys
import tempfile

from deepfeat.benchmarking.images import bench_images
from deepfeat.benchmarking.profile import profile_stages

if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 96
    backbone = sys.argv[2] if len(sys.argv) > 2 else "efficientnet_lite0"
    with tempfile.TemporaryDirectory() as tmp:
        imgs = bench_images(tmp, n)
        weights = "DEFAULT" if backbone == "efficientnet_lite0" else None
        print(json.dumps(profile_stages(imgs.paths, backbone, weights), indent=2))
