"""The contrastive text fine-tune on an experiment's draws, for ``experiment --strategies``.

Each draw's training texts tune the encoder and fit the head
(:class:`~deepfeat.text_finetune.ContrastiveTextClassifier`, seeded by the draw); its
held-out texts are scored. The rows pair with the frozen encoder's rows of the same draws
(:func:`deepfeat.pipelines.strategies.compare_strategies`). A finished draw's row is kept in
``work_dir`` and a killed run resumes: finished draws are read back, the draw in flight
resumes from its training state.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from deepfeat.text_finetune.estimator import ContrastiveTextClassifier

__all__ = ["text_finetune_draws"]


def text_finetune_draws(
    texts: Sequence[str],
    labels: Sequence[Any] | np.ndarray,
    draws: Sequence[Any],
    *,
    name: str = "finetune",
    work_dir: str | os.PathLike | None = None,
    params: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Fine-tune on each draw's training texts and score its held-out texts.

    Parameters
    ----------
    texts : sequence of str
        Every text of the run, indexed like ``labels``.
    labels : array-like
    draws : sequence of Draw
        ``train``, ``test`` (indices), ``shots``, ``k``, ``repeat``, ``seed``.
    name : str
        The ``space`` column of the rows.
    work_dir : path or None
        Training states and finished rows (default: a temporary folder).
    params : dict or None
        :class:`ContrastiveTextClassifier` parameters (its defaults otherwise); ``seed`` is
        each draw's.

    Returns
    -------
    list of dict
        Per draw: ``space, shots, k, repeat, seed, n_train, n_test, accuracy,
        balanced_accuracy, fit_seconds, steps``.
    """
    y = np.asarray(labels)
    texts = list(texts)
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="deepfeat-text-finetune-")
        work_dir = tmp.name
    os.makedirs(work_dir, exist_ok=True)
    rows = []
    try:
        for d in draws:
            key = hashlib.sha256(json.dumps(
                {"train": np.asarray(d.train).tolist(), "test": np.asarray(d.test).tolist(),
                 "seed": int(d.seed), "params": params or {}}, sort_keys=True, default=str).encode()
            ).hexdigest()[:16]
            done = os.path.join(os.fspath(work_dir), f"{name}-{d.shots}-{d.repeat}-{key}.json")
            if os.path.isfile(done):
                with open(done) as fh:
                    rows.append(json.load(fh))
                continue
            t0 = time.perf_counter()
            clf = ContrastiveTextClassifier(**{**(params or {}), "seed": int(d.seed)},
                                            checkpoint_dir=work_dir)
            clf.fit([texts[i] for i in d.train], y[d.train])
            pred = clf.predict([texts[i] for i in d.test])
            row = {
                "space": name, "shots": str(d.shots), "k": float(d.k), "repeat": int(d.repeat),
                "seed": int(d.seed), "n_train": len(d.train), "n_test": len(d.test),
                "accuracy": float(accuracy_score(y[d.test], pred)),
                "balanced_accuracy": float(balanced_accuracy_score(y[d.test], pred)),
                "fit_seconds": time.perf_counter() - t0, "steps": int(clf.train_summary_["steps"]),
            }
            tmp_file = f"{done}.tmp-{os.getpid()}"
            with open(tmp_file, "w") as fh:
                json.dump(row, fh)
            os.replace(tmp_file, done)
            rows.append(row)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return rows
