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
        Training states (one per draw: a killed comparison resumes); default a temporary folder.
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
    rt = featurizer.runtime
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="deepfeat-finetune-")
        work_dir = tmp.name
    rows, predictions = [], {}
    bar = tqdm(total=len(draws), desc="fine-tuning draws", file=sys.stderr,
               disable=not (progress and sys.stderr.isatty()))
    try:
        for d in draws:
            t0 = time.perf_counter()
            r = Recipe(**{**recipe.to_dict(), "seed": int(d.seed)})
            classes, codes = np.unique(y[d.train], return_inverse=True)
            net, _ = build_network(featurizer.resolved, featurizer.layer, featurizer.pool, len(classes))
            if r.lp_init:
                W, b = linear_probe(frozen_features[d.train], codes, len(classes), r.seed)
                with torch.no_grad():
                    net.head.weight.copy_(torch.from_numpy(W))
                    net.head.bias.copy_(torch.from_numpy(b))
            sub = bank.subset([slot[int(i)] for i in d.train])
            res = fine_tune(net, sub, codes, r, rt,
                            state_path=os.path.join(os.fspath(work_dir), f"{name}-{d.shots}-{d.repeat}.state.pt"),
                            identity=f"{featurizer.fingerprint}:{r.digest()}:{d.shots}:{d.repeat}:{len(d.train)}")
            seconds = time.perf_counter() - t0
            proba = _predict_proba(net, bank, [slot[int(i)] for i in d.test], rt)
            y_pred = classes[proba.argmax(1)]
            y_true = y[d.test]
            rows.append({
                "space": name, "shots": str(d.shots), "k": d.k, "repeat": d.repeat, "seed": d.seed,
                "n_train": len(d.train), "n_test": len(d.test),
                "accuracy": accuracy_score(y_true, y_pred),
                "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
                "best_epoch": res.best_epoch, "fit_seconds": seconds,
                "images_per_second": res.images_per_second,
            })
            predictions[(name, str(d.shots), d.repeat)] = {
                "test": d.test, "y_pred": y_pred, "confidence": proba.max(1),
            }
            log.info("fine-tuned k=%s repeat %d: accuracy %.4f in %.1f s", d.shots, d.repeat,
                     rows[-1]["accuracy"], seconds)
            bar.update()
    finally:
        bar.close()
        if tmp is not None:
            tmp.cleanup()
    return rows, predictions


def _predict_proba(net: torch.nn.Module, bank: Any, idx: list[int], rt: Any) -> np.ndarray:
    out = []
    with torch.no_grad(), autocast(rt):
        for s in range(0, len(idx), EVAL_ROWS):
            x = bank.normalize(bank.eval_batch(idx[s : s + EVAL_ROWS]), rt.device, rt.channels_last)
            out.append(torch.softmax(net(x).float(), 1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, net.head.out_features))
