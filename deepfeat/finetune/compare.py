"""Fine-tuning scored on the draws of a learning curve, for the frozen-vs-fine-tuned comparison.

For every draw the backbone is fine-tuned on the draw's training images only (its inner
validation split, for early stopping, is cut from them too) and scored on the draw's
held-out images, which never take part in training, early stopping or tuning. The
fine-tuned network's own last layer (initialised from the logistic regression on the
draw's frozen features, LP-FT) makes the predictions, on the backbone's centre crop.

Draws are any objects with ``shots``, ``k``, ``repeat``, ``seed``, ``train``, ``test``
(such as :class:`deepfeat.pipelines.protocol.Draw`); this module does not import the
pipelines, which sit above it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from deepfeat.featurize import Featurizer
from deepfeat.finetune.estimator import linear_probe
from deepfeat.finetune.images import load_pixels
from deepfeat.finetune.network import build_network
from deepfeat.finetune.recipe import Recipe
from deepfeat.finetune.train import EVAL_ROWS, autocast, fine_tune
from deepfeat.jsonable import json_default

__all__ = ["finetune_draws"]

log = logging.getLogger(__name__)


def finetune_draws(
    paths: Sequence[Any],
    labels: Sequence[Any] | np.ndarray,
    draws: Sequence[Any],
    frozen_features: np.ndarray,
    featurizer: Featurizer,
    recipe: Recipe | None = None,
    *,
    name: str = "finetune",
    work_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], dict[tuple[str, str, int], dict[str, Any]]]:
    """Fine-tune on each draw's training images and score its held-out images.

    Parameters
    ----------
    paths : sequence
        Every image of the run (paths, PIL images or arrays), indexed like ``labels``.
    labels : array-like
    draws : sequence of Draw
    frozen_features : ndarray of shape (n, d)
        The frozen backbone's features of every image (for the LP-FT initialisation).
    featurizer : Featurizer
        The frozen space's featurizer: backbone, layer, pooling, preprocessing, runtime.
    recipe : Recipe, optional
        The fine-tuning recipe (default: :class:`Recipe`'s defaults); its ``seed`` is
        replaced by each draw's seed.
    name : str
        The ``space`` column of the rows.
    work_dir : path, optional
        Per draw, its training state while it trains and its result once scored: a killed
        comparison, run again, skips the finished draws and resumes the one in flight.
        Default: a temporary folder.
    progress : bool

    Returns
    -------
    rows : list of dict
        Per draw: ``space, shots, k, repeat, seed, n_train, n_test, accuracy,
        balanced_accuracy, best_epoch, fit_seconds, images_per_second``.
    predictions : dict
        ``{(name, shots, repeat): {"test", "y_pred", "confidence"}}``.
    """
    from tqdm.auto import tqdm

    recipe = recipe or Recipe()
    y = np.asarray(labels)
    needed = np.unique(np.concatenate([np.concatenate([d.train, d.test]) for d in draws]))
    slot = {int(i): j for j, i in enumerate(needed)}
    bank = load_pixels([paths[i] for i in needed], featurizer.preprocess, max_pixels=featurizer.max_pixels)
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="deepfeat-finetune-")
        work_dir = tmp.name
    os.makedirs(work_dir, exist_ok=True)
    rows, predictions = [], {}
    bar = tqdm(total=len(draws), desc="fine-tuning draws", file=sys.stderr,
               disable=not (progress and sys.stderr.isatty()))
    try:
        for d in draws:
            t0 = time.perf_counter()
            r = Recipe(**{**recipe.to_dict(), "seed": int(d.seed)})
            stem = os.path.join(os.fspath(work_dir), f"{name}-{d.shots}-{d.repeat}")
            identity = f"{featurizer.fingerprint}:{r.digest()}:{d.shots}:{d.repeat}:{_digest(d.train, d.test)}"
            done = _load_done(stem + ".json", identity)
            if done is None:
                done = _one_draw(d, r, y, frozen_features, featurizer, bank, slot, stem + ".state.pt", identity)
                done["row"]["fit_seconds"] = time.perf_counter() - t0
                _save_done(stem + ".json", identity, done)
                with contextlib.suppress(OSError):
                    os.remove(stem + ".state.pt")  # ~4x the model's size; the draw's result is kept
            rows.append({"space": name, **done["row"]})
            predictions[(name, str(d.shots), d.repeat)] = {
                "test": np.asarray(d.test), "y_pred": np.asarray(done["y_pred"], dtype=y.dtype),
                "confidence": np.asarray(done["confidence"], dtype=float),
            }
            log.info("fine-tuned k=%s repeat %d: accuracy %.4f in %.1f s", d.shots, d.repeat,
                     rows[-1]["accuracy"], rows[-1]["fit_seconds"])
            bar.update()
    finally:
        bar.close()
        if tmp is not None:
            tmp.cleanup()
    return rows, predictions


def _one_draw(d: Any, r: Recipe, y: np.ndarray, frozen_features: np.ndarray, featurizer: Featurizer,
              bank: Any, slot: dict[int, int], state_path: str, identity: str) -> dict[str, Any]:
    classes, codes = np.unique(y[d.train], return_inverse=True)
    net, _ = build_network(featurizer.resolved, featurizer.layer, featurizer.pool, len(classes))
    if r.lp_init:
        W, b = linear_probe(frozen_features[d.train], codes, len(classes), r.seed)
        with torch.no_grad():
            net.head.weight.copy_(torch.from_numpy(W))
            net.head.bias.copy_(torch.from_numpy(b))
    res = fine_tune(net, bank.subset([slot[int(i)] for i in d.train]), codes, r, featurizer.runtime,
                    state_path=state_path, identity=identity)
    proba = _predict_proba(net, bank, [slot[int(i)] for i in d.test], featurizer.runtime)
    y_pred = classes[proba.argmax(1)]
    y_true = y[d.test]
    row = {
        "shots": str(d.shots), "k": float(d.k), "repeat": int(d.repeat), "seed": int(d.seed),
        "n_train": len(d.train), "n_test": len(d.test),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "best_epoch": res.best_epoch, "images_per_second": res.images_per_second,
    }
    return {"row": row, "y_pred": y_pred.tolist(), "confidence": proba.max(1).tolist()}


def _digest(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.asarray(a, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()[:16]


def _load_done(path: str, identity: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            done = json.load(fh)
    except (OSError, ValueError):
        return None
    return done if done.get("identity") == identity else None


def _save_done(path: str, identity: str, done: dict[str, Any]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"identity": identity, **done}, fh, default=json_default)
    os.replace(tmp, path)


def _predict_proba(net: torch.nn.Module, bank: Any, idx: list[int], rt: Any) -> np.ndarray:
    out = []
    with torch.no_grad(), autocast(rt):
        for s in range(0, len(idx), EVAL_ROWS):
            x = bank.normalize(bank.eval_batch(idx[s : s + EVAL_ROWS]), rt.device, rt.channels_last)
            out.append(torch.softmax(net(x).float(), 1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, net.head.out_features))
