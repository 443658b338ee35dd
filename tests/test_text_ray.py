"""``engine="ray"`` on texts: the actors encode what the cache lacks, rows equal the local engine's."""

from __future__ import annotations

import numpy as np
import pytest
from text_data import RUNTIME, sentiment

pytest.importorskip("transformers")
pytest.importorskip("ray")
from test_ray import ray_cluster  # noqa: E402,F401 - a local Ray for the module

import deepfeat.classify  # noqa: E402,F401 - scipy and sklearn add warnings filters at import: here, not in the test
from deepfeat.featurize.text_featurizer import TextFeaturizer  # noqa: E402


@pytest.mark.slow  # a Ray job building MiniLM in its actor: ~40 s on a loaded 2-core machine
def test_texts_on_ray_fill_the_cache_with_the_local_rows(ray_cluster, tmp_path):  # noqa: F811
    X, _ = sentiment()
    texts = list(X[:40])
    path = str(tmp_path / "c.h5")
    res = TextFeaturizer(**RUNTIME, cache=path, engine="ray", ray_address=ray_cluster).featurize(texts)
    assert res.summary["featurized"] == 40 and res.ok.all()
    again = TextFeaturizer(**RUNTIME, cache=path).featurize(texts)
    assert again.summary["featurized"] == 0
    local = TextFeaturizer(**RUNTIME).featurize(texts)
    np.testing.assert_allclose(again.features, local.features, atol=2e-5)
    np.testing.assert_allclose(res.features, local.features, atol=2e-5)
