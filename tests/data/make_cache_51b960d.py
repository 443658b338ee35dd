"""Write tests/data/cache_51b960d.h5.gz: a cache filled by deepfeat before the encoder/reader split.

Run once with the library of that commit on the path (``PYTHONPATH=<checkout of 51b960d>``);
tests/test_featurize_compat.py featurizes the same inputs with today's code into a copy of it
and asserts that nothing is encoded again.
"""

from __future__ import annotations

import gzip
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from deepfeat.featurize import Featurizer
from deepfeat.featurize.text_featurizer import TextFeaturizer

#: The feature spaces the file holds: the offline default, a cut+pooled+TTA space of a
#: timm test network, and two text spaces (the default, and a cut with its own window).
IMAGE_SPACES = (
    dict(backbone="efficientnet_lite0"),
    dict(backbone="timm:test_resnet", weights=None, layer="layer2", pool="gem", tta="flip"),
)
TEXT_SPACES = (
    dict(backbone="minilm"),
    dict(backbone="minilm", layer="encoder.layer.2", pool="cls", max_length=16),
)
TEXTS = ["a fine day", "the screen cracked within a week", "Ünïcödé text — and more", "ok"]


def images() -> list[np.ndarray]:
    """Four small real photos (strided crops of scikit-image samples: no encoder involved)."""
    from skimage import data

    return [np.ascontiguousarray(getattr(data, n)()[::8, ::8]) for n in ("chelsea", "coffee", "astronaut", "rocket")]


def fill(path: str) -> None:
    run = dict(device="cpu", precision="fp32", cache=path)
    for kw in IMAGE_SPACES:
        assert Featurizer(**kw, **run).featurize(images()).summary["featurized"] == 4
    for kw in TEXT_SPACES:
        assert TextFeaturizer(**kw, **run).featurize(TEXTS).summary["featurized"] == 4


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("cache_51b960d.h5.gz"))
    with tempfile.TemporaryDirectory() as d:
        h5 = Path(d) / "cache.h5"
        fill(str(h5))
        from deepfeat.featurize.cache import FeatureCache

        FeatureCache(str(h5)).compact()  # one file: the segments folded in
        with open(h5, "rb") as src, gzip.GzipFile(out, "wb", mtime=0) as dst:
            shutil.copyfileobj(src, dst)
    print(out, out.stat().st_size, "bytes")
