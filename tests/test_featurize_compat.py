"""A cache filled by deepfeat before the encoder/reader split is reused with no recomputation.

``tests/data/cache_51b960d.h5.gz`` was written by the featurizers of commit 51b960d
(``tests/data/make_cache_51b960d.py``): two image spaces and two text spaces over the same
inputs this test featurizes now. Keys (content hashes) and space fingerprints must come out
byte for byte the same, so every row is found and nothing is encoded.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from deepfeat.featurize import FeatureCache, Featurizer

DATA = Path(__file__).parent / "data"
_spec = importlib.util.spec_from_file_location("make_cache_51b960d", DATA / "make_cache_51b960d.py")
made = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(made)

RUN = dict(device="cpu", precision="fp32")


@pytest.fixture
def old_cache(tmp_path: Path) -> str:
    path = tmp_path / "cache.h5"
    path.write_bytes(gzip.decompress((DATA / "cache_51b960d.h5.gz").read_bytes()))
    return str(path)


@pytest.mark.parametrize("kw", made.IMAGE_SPACES, ids=lambda kw: kw["backbone"])
def test_image_rows_of_the_old_featurizer_are_reused(old_cache, kw):
    f = Featurizer(**kw, **RUN, cache=old_cache)
    assert f.fingerprint in FeatureCache(old_cache).spaces()
    res = f.featurize(made.images())
    assert res.summary["featurized"] == 0 and res.summary["cached"] == 4
    assert f.forward_passes == 0 and not f.built, "nothing may be encoded, nor the network built"
    assert np.isfinite(res.features).all() and res.features.shape[0] == 4


def test_a_changed_space_is_computed_again(old_cache):
    """Negative control: a space the old cache lacks (another pooling) is encoded."""
    kw = {**made.IMAGE_SPACES[1], "pool": "avg"}
    res = Featurizer(**kw, **RUN, cache=old_cache).featurize(made.images())
    assert res.summary["featurized"] == 4


@pytest.mark.parametrize("kw", made.TEXT_SPACES, ids=lambda kw: str(kw.get("layer", "last")))
def test_text_rows_of_the_old_featurizer_are_reused(old_cache, kw):
    pytest.importorskip("transformers")
    from deepfeat.featurize.text_featurizer import TextFeaturizer

    f = TextFeaturizer(**kw, **RUN, cache=old_cache)
    assert f.fingerprint in FeatureCache(old_cache).spaces()
    res = f.featurize(made.TEXTS)
    assert res.summary["featurized"] == 0 and res.summary["cached"] == 4
    assert f.forward_passes == 0 and not f.built
    # a text the old run never saw is encoded: the keys, not luck, decided the above
    assert f.featurize([*made.TEXTS, "a new sentence"]).summary["featurized"] == 1
