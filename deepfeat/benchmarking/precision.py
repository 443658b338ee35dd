"""bf16 against fp32: embedding agreement and downstream accuracy on the same photos.

``precision="auto"`` picks bf16 only where the hardware computes it natively; forcing it
elsewhere runs emulated (slower, same numbers). Either way the question is whether bf16
embeddings are as good: mean cosine similarity to the fp32 embeddings of the same images,
and the test accuracy of the same classifier trained on each, on a fixed-seed stratified
split (``train_per_class`` / rest per class).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from deepfeat.featurize import Featurizer
from deepfeat.featurize.runtime import cpu_has_native_bf16, resolve_runtime

__all__ = ["measure_precision", "stratified_split"]


def stratified_split(
    labels: np.ndarray, train_per_class: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``train_per_class`` random images per class, and of the rest."""
    rng = np.random.default_rng(seed)
    train = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        train.extend(rng.permutation(idx)[:train_per_class].tolist())
    train_idx = np.array(sorted(train))
    test_idx = np.setdiff1d(np.arange(len(labels)), train_idx)
    return train_idx, test_idx


def _accuracy(x: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    clf.fit(x[tr], y[tr])
    return float((clf.predict(x[te]) == y[te]).mean())


def measure_precision(
    paths: list[str],
    labels: np.ndarray,
    workdir: Path,
    *,
    backbone: str = "efficientnet_lite0",
    train_per_class: int = 40,
    seed: int = 0,
) -> dict[str, Any]:
    """Featurize ``paths`` in fp32 and forced bf16 (fresh caches) and compare.

    Returns
    -------
    dict
        ``auto_precision`` (what ``precision="auto"`` picks here), ``native_bf16``,
        ``bf16_mean_cosine``, ``bf16_min_cosine``, ``accuracy_fp32``, ``accuracy_bf16``,
        ``accuracy_difference_points``, images/s of both runs and the split used.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    feats, ips = {}, {}
    for prec in ("fp32", "bf16"):
        cache = workdir / f"precision-{prec}.h5"
        for suffix in ("", ".journal"):
            Path(str(cache) + suffix).unlink(missing_ok=True)
        f = Featurizer(backbone, device="cpu", precision=prec, cache=cache)
        t0 = time.perf_counter()
        res = f.featurize(paths)
        ips[prec] = len(paths) / (time.perf_counter() - t0)
        if not res.ok.all():
            raise RuntimeError(
                f"{int((~res.ok).sum())} images failed to featurize: {res.failures[:3]}"
            )
        feats[prec] = res.features
    a, b = feats["fp32"], feats["bf16"]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    tr, te = stratified_split(labels, train_per_class, seed)
    acc32, acc16 = _accuracy(a, labels, tr, te), _accuracy(b, labels, tr, te)
    return {
        "backbone": backbone,
        "images": len(paths),
        "auto_precision_cpu": resolve_runtime("cpu", "auto").precision,
        "native_bf16": cpu_has_native_bf16(),
        "bf16_mean_cosine": round(float(cos.mean()), 5),
        "bf16_min_cosine": round(float(cos.min()), 5),
        "split": f"{train_per_class} train per class (seed {seed}), the rest test: "
        f"{len(tr)} train / {len(te)} test, {len(np.unique(labels))} classes",
        "classifier": "StandardScaler + LogisticRegression(C=0.1)",
        "accuracy_fp32": round(acc32, 4),
        "accuracy_bf16": round(acc16, 4),
        "accuracy_difference_points": round(abs(acc32 - acc16) * 100, 2),
        "images_per_second_fp32": round(ips["fp32"], 2),
        "images_per_second_bf16_forced": round(ips["bf16"], 2),
    }
