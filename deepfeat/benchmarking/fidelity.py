"""Does the fast preprocessing keep the embeddings? Compared with the plain pipeline.

The reference is the pipeline as it was before the shortcuts: Pillow decode, the whole
image resized by PyTorch (antialiased, the backbone's interpolation), a centre crop, a
separate mean/std normalise and the unfolded fp32 network. The negative control is a real
preprocessing change: bilinear resizing without antialiasing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from deepfeat.featurize import Featurizer
from deepfeat.featurize.decode import decode_image

__all__ = ["reference_embeddings", "row_cosines", "preprocessing_fidelity"]


def reference_embeddings(f: Featurizer, paths: list[str], mode: str | None = None,
                         antialias: bool = True, batch: int = 32) -> np.ndarray:
    """Embeddings of ``paths`` by the plain pipeline (``mode``: the backbone's by default)."""
    from deepfeat.benchmarking.contenders import plain_network

    p = f.preprocess
    mode = mode or p.interpolation
    net = plain_network(f)
    out = []
    for s in range(0, len(paths), batch):
        rows = []
        for path in paths[s : s + batch]:
            img = np.array(decode_image(path, draft_size=p.draft_size))
            x = torch.from_numpy(img).permute(2, 0, 1)[None]
            h, w = x.shape[-2:]
            k = p.resize / min(h, w)
            nh, nw = max(p.crop[0], round(h * k)), max(p.crop[1], round(w * k))
            y = torch.nn.functional.interpolate(x, size=(nh, nw), mode=mode, antialias=antialias,
                                                align_corners=False)
            top, left = (nh - p.crop[0]) // 2, (nw - p.crop[1]) // 2
            rows.append(y[0, :, top : top + p.crop[0], left : left + p.crop[1]].clamp(0, 255).to(torch.uint8))
        with torch.no_grad():
            out.append(net(p.normalize(torch.stack(rows))).float().numpy())
    return np.concatenate(out)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``."""
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def preprocessing_fidelity(paths: list[str], labels: np.ndarray | None = None,
                           backbone: str = "efficientnet_lite0", weights: str | None = "DEFAULT",
                           precision: str = "fp32", seed: int = 0) -> dict[str, Any]:
    """Cosines of deepfeat's embeddings to the reference, and held-out accuracy of both.

    With ``labels``, a logistic regression is fitted on a stratified half (``seed``) and
    scored on the other half for deepfeat's rows, the reference rows and the control's.
    """
    f = Featurizer(backbone, weights=weights, device="cpu", precision=precision, cache=None)
    got = f.featurize(list(paths)).features
    ref = reference_embeddings(f, list(paths))
    control = reference_embeddings(f, list(paths), mode="bilinear", antialias=False)
    c, cc = row_cosines(got, ref), row_cosines(control, ref)
    result: dict[str, Any] = {
        "backbone": backbone, "precision": f.runtime.describe(), "images": len(paths),
        "folded_input": bool(getattr(f.model, "takes_raw_pixels", False)),
        "cosine_to_reference": {"mean": round(float(c.mean()), 6), "min": round(float(c.min()), 6)},
        "control_bilinear_no_antialias_cosine": {"mean": round(float(cc.mean()), 6),
                                                 "min": round(float(cc.min()), 6)},
    }
    if labels is not None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        idx = np.arange(len(paths))
        tr, te = train_test_split(idx, test_size=0.5, stratify=labels, random_state=seed)
        acc = {}
        for name, X in (("deepfeat", got), ("reference", ref), ("control", control)):
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            acc[name] = round(float(clf.fit(X[tr], labels[tr]).score(X[te], labels[te])), 4)
        result["held_out_accuracy"] = acc
        result["split"] = f"stratified 50/50, random_state={seed}"
    return result
