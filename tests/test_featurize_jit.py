"""The traced, oneDNN-fused CPU network: same embeddings as the eager one, or not used."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.featurize import Featurizer
from deepfeat.featurize.featurizer import JIT_MIN_IMAGES
from deepfeat.featurize.runtime import resolve_runtime
from deepfeat.featurize.surgery import trace_for_cpu


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = (a * b).sum(1)
    return float((num / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


@pytest.mark.parametrize(
    "kw",
    [
        {"backbone": "efficientnet_lite0"},
        {"backbone": "torchvision:resnet18", "weights": None, "layer": "layer3", "pool": "gem"},
        {"backbone": "timm:resnet18", "weights": None, "precision": "fp32"},
    ],
    ids=["lite0-default", "resnet18-layer3-gem", "timm-resnet18-fp32"],
)
def test_traced_network_gives_the_eager_embeddings(photo_dir, kw):
    paths = sorted(photo_dir.iterdir())  # 10 photos: a slice of 10, not the traced 16
    traced = Featurizer(**kw, device="cpu", jit=True, batch_size=4)
    eager = Featurizer(**kw, device="cpu", jit=False, batch_size=4)
    got = traced.featurize(paths).features
    assert traced.encoder.traced is not None, "the traced network was not used"
    assert eager.encoder.traced is None
    ref = eager.featurize(paths).features
    assert got.shape == ref.shape
    # bf16 rounds differently in fused kernels; fp32 agrees to rounding
    assert _min_cosine(got, ref) > (0.999 if traced.runtime.precision == "bf16" else 0.99999)


def test_auto_traces_only_jobs_large_enough_to_repay_it(photo_dir):
    f = Featurizer(device="cpu")
    f.featurize(sorted(photo_dir.iterdir()))
    assert f.encoder.traced is None and f.built
    f.prepare(JIT_MIN_IMAGES)
    assert f.encoder.traced is not None
    state = f.encoder.__getstate__()  # neither network is pickled
    assert state["traced"] is None and state["_model"] is None
    off = Featurizer(device="cpu", jit=False)
    off.prepare(10 * JIT_MIN_IMAGES)
    assert off.encoder.traced is None


@pytest.mark.usefixtures("own_global_rng")  # the test's own code draws from them
def test_a_trace_that_does_not_reproduce_the_network_is_refused():
    class ShapeBranch(torch.nn.Module):
        """Python control flow on the batch size: tracing bakes in the branch it saw."""

        def forward(self, x):
            pooled = x.mean((2, 3))
            return pooled if x.shape[0] > 4 else -pooled

    rt = resolve_runtime("cpu", "fp32")
    net = ShapeBranch().eval()
    example, check = torch.randn(16, 3, 8, 8), torch.randn(3, 3, 8, 8)
    assert trace_for_cpu(net, example, rt, check) is None
    # the same check passes a faithful trace (positive control)
    assert trace_for_cpu(net, example, rt, torch.randn(6, 3, 8, 8)) is not None
    # and the global oneDNN fusion switch is left as it was
    assert torch._C._jit_llga_enabled() is False


def test_bad_jit_value_is_refused():
    with pytest.raises(ValueError, match="jit must be one of"):
        Featurizer(device="cpu", jit="yes")
