"""onnxruntime's CPU throughput beside torch's, for the same network on the same crops.

The network is what ``deepfeat export`` writes (uint8 crops in, normalisation inside the
graph) without a head: the backbone's embeddings out. Both runtimes get the same
pre-resized uint8 crops in batches of :data:`BATCH`, use their default thread settings,
and run in alternating rounds (median reported), so the ratio is measured under the
same load. Decoding and resizing are left out: they are the same work for both.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from deepfeat.process_state import ignoring_warnings

__all__ = ["measure_onnx_runtime", "BATCH"]

BATCH = 16


def _rate(fn: Any, crops: np.ndarray) -> float:
    t0 = time.perf_counter()
    for s in range(0, len(crops), BATCH):
        fn(crops[s : s + BATCH])
    return len(crops) / (time.perf_counter() - t0)


def measure_onnx_runtime(
    backbone: str, images: list[Any], work: Any, *, repeats: int = 3, weights: str | None = "DEFAULT"
) -> dict[str, Any]:
    """Images/s of the exported network in torch (eager, fp32) and in onnxruntime (CPU).

    Returns
    -------
    dict
        ``torch_images_per_second``, ``onnxruntime_images_per_second`` (medians), their
        ratio, the runs, and ``max_abs_diff`` of the embeddings (onnxruntime vs torch).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime is not installed (pip install 'deepfeat[onnx]')"}
    from deepfeat.export.graph import ImageToProba
    from deepfeat.featurize import Featurizer
    from deepfeat.featurize.decode import decode_image

    f = Featurizer(backbone, weights=weights, device="cpu", precision="fp32", cache=None,
                   num_workers=0, jit=False, channels_last=False)
    pre = f.preprocess
    crops = np.stack([pre.geometry(decode_image(p)).numpy() for p in images])
    graph = ImageToProba(f.model.eval(), torch.nn.Identity(), pre.mean, pre.std).eval()
    path = str(work / "backbone.onnx")
    work.mkdir(parents=True, exist_ok=True)
    with ignoring_warnings(), torch.no_grad():
        torch.onnx.export(graph, (torch.from_numpy(crops[:2]),), path, dynamo=False, opset_version=17,
                          input_names=["pixels"], output_names=["embeddings"],
                          dynamic_axes={"pixels": {0: "batch"}, "embeddings": {0: "batch"}})
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def run_torch(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return graph(torch.from_numpy(x)).numpy()

    def run_ort(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {"pixels": x})[0]

    n = min(len(crops), 2 * BATCH)
    diff = float(np.abs(run_ort(crops[:n]) - run_torch(crops[:n])).max())
    run_torch(crops[:BATCH])
    run_ort(crops[:BATCH])  # warm-up
    t_runs, o_runs = [], []
    for _ in range(repeats):
        t_runs.append(_rate(run_torch, crops))
        o_runs.append(_rate(run_ort, crops))
    t, o = float(np.median(t_runs)), float(np.median(o_runs))
    return {
        "backbone": backbone,
        "images": len(crops),
        "batch": BATCH,
        "torch_threads": torch.get_num_threads(),
        "torch_images_per_second": round(t, 2),
        "onnxruntime_images_per_second": round(o, 2),
        "onnxruntime_vs_torch": round(o / t, 3),
        "torch_runs": [round(v, 1) for v in t_runs],
        "onnxruntime_runs": [round(v, 1) for v in o_runs],
        "max_abs_diff": diff,
        "onnxruntime": ort.__version__,
    }
