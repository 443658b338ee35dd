"""The evaluation protocol: k-shot draws, nested training, held-out scoring.

One protocol serves the learning curve, the layer sweep, the backbone comparison and the
baselines: every feature space is scored on *the same* draws (same seeds, same images),
so spaces can be compared pair-wise, draw by draw. For each draw the head is built by a
search factory from the training labels alone and fitted on the training rows alone; the
held-out rows are only ever passed to ``predict``/``predict_proba``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from deepfeat.classify.cv import class_counts
from deepfeat.classify.metrics import calibration_report
from deepfeat.exceptions import InputError, InvalidParameterError
from deepfeat.pipelines.heads import (
    SearchFactory,
    default_search_factory,
    fixed_head,
)
from deepfeat.pipelines.sampling import ALL, sample_k_shot
from deepfeat.process_state import quieter_logs

__all__ = ["Draw", "ProtocolResult", "make_draws", "run_protocol"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Draw:
    """One training draw and the images it is scored on.

    Attributes
    ----------
    shots : int or "all"
        The requested images per class.
    k : float
        Mean training images per class actually used (``shots`` unless ``"all"``).
    repeat : int
        Repeat number; its seed is ``seed + repeat``.
    seed : int
    train : numpy.ndarray
        Training indices.
    test : numpy.ndarray
        Held-out indices (disjoint from ``train``).
    """

    shots: int | str
    k: float
    repeat: int
    seed: int
    train: np.ndarray = field(repr=False)
    test: np.ndarray = field(repr=False)


def make_draws(
    y: Sequence | np.ndarray,
    shots: Sequence[int | str],
    repeats: int,
    *,
    seed: int = 0,
    train_pool: np.ndarray | None = None,
    test: np.ndarray | None = None,
) -> tuple[list[Draw], list[str]]:
    """Build the draws of a learning curve.

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels.
    shots : sequence of int or "all"
        Images per class to draw.
    repeats : int
        Draws per shot value; repeat ``r`` uses seed ``seed + r`` (nested across shots).
        ``"all"`` is a single draw (the whole pool), so it has no interval.
    seed : int
        Base seed.
    train_pool : array-like of int, optional
        Indices training images are drawn from (default: all).
    test : array-like of int, optional
        A fixed test set. When omitted, each draw is scored on the rest of the pool
        ("rest held out"), and ``"all"`` is not possible.

    Returns
    -------
    draws : list of Draw
    notes : list of str
        Shot values skipped and why (a class too small for them).

    Examples
    --------
    >>> draws, notes = make_draws([0, 0, 0, 1, 1, 1], [1, 2], repeats=2)
    >>> [(d.shots, d.repeat, len(d.train), len(d.test)) for d in draws]
    [(1, 0, 2, 4), (1, 1, 2, 4), (2, 0, 4, 2), (2, 1, 4, 2)]
    """
    y = np.asarray(y)
    if repeats < 1:
        raise InvalidParameterError(f"repeats must be >= 1, got {repeats!r}")
    pool = np.arange(len(y)) if train_pool is None else np.asarray(train_pool, dtype=int)
    fixed = None if test is None else np.asarray(test, dtype=int)
    if fixed is not None and np.intersect1d(pool, fixed).size:
        raise InputError("the training pool and the test set overlap; they must be disjoint")
    _, counts = np.unique(y[pool], return_counts=True)
    smallest = int(counts.min())
    # In "rest" mode each class must keep at least one held-out image.
    limit = smallest if fixed is not None else smallest - 1
    draws, notes = [], []
    for shots_value in shots:
        if shots_value == ALL and fixed is None:
            notes.append(
                "shots='all' skipped: it needs a fixed test set (give a test source or a "
                "test size); with 'rest held out' nothing would be left to test on"
            )
            continue
        if shots_value != ALL and shots_value > limit:
            notes.append(
                f"shots={shots_value} skipped: the smallest class has {smallest} image(s) in "
                f"the training pool" + ("" if fixed is not None else " (one must stay held out)")
            )
            continue
        # "all" takes the whole pool: every repeat would be the same draw, so there is one.
        for r in range(1 if shots_value == ALL else repeats):
            train = sample_k_shot(y, shots_value, seed=seed + r, pool=pool)
            held = fixed if fixed is not None else np.setdiff1d(pool, train)
            k = len(train) / len(np.unique(y[train]))
            draws.append(Draw(shots_value, float(k), r, seed + r, train, held))
    for note in notes:
        log.warning(note)
    if not draws:
        raise InputError(f"no shot value is possible with these data: {'; '.join(notes)}")
    return draws, notes


@dataclass
class ProtocolResult:
    """Everything the protocol measured.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per (space, draw): ``space, shots, k, repeat, seed, n_train, n_test,
        accuracy, balanced_accuracy, log_loss, ece, tuning, best_params, fit_seconds``
        (``log_loss`` and ``ece``, the top-label expected calibration error, are NaN for
        heads without ``predict_proba``).
    predictions : dict
        ``{(space, shots, repeat): {"test", "y_pred", "confidence"}}``: the held-out
        indices of every draw, their predicted labels and the predicted class's
        probability (NaN for heads without ``predict_proba``).
    """

    table: pd.DataFrame
    predictions: dict[tuple[str, str, int], dict[str, Any]]


def _fit_one(X, y, draw: Draw, search_factory: SearchFactory):
    y_train = y[draw.train]
    if min(class_counts(y_train).values()) < 2:
        est, tuning = fixed_head(draw.seed), "fixed (1 image in a class: no CV possible)"
    else:
        est, tuning = search_factory(y_train, draw.seed), "nested CV on the training draw"
    t0 = time.perf_counter()
    est.fit(X[draw.train], y_train)
    seconds = time.perf_counter() - t0
    params = getattr(est, "best_params_", None)
    return est, tuning, params, seconds


def _jsonable(params: Any) -> str:
    if params is None:
        return ""
    return json.dumps(params, sort_keys=True, default=repr)


def run_protocol(
    spaces: Mapping[str, np.ndarray],
    y: Sequence | np.ndarray,
    draws: Sequence[Draw],
    *,
    search_factory: SearchFactory | None = None,
    progress: bool = False,
) -> ProtocolResult:
    """Train and score a head on every draw in every feature space.

    Parameters
    ----------
    spaces : mapping of str to ndarray of shape (n, d)
        Feature matrices, all indexed like ``y``.
    y : array-like of shape (n,)
        Labels.
    draws : sequence of Draw
        From :func:`make_draws`.
    search_factory : callable, optional
        ``factory(y_train, seed) -> estimator`` choosing hyperparameters by CV inside the
        training draw; :func:`~deepfeat.pipelines.heads.default_search_factory` by default.
    progress : bool
        Show a tqdm bar on stderr (when it is a terminal). The head search's per-fit log
        lines are shown only at DEBUG level.

    Returns
    -------
    ProtocolResult

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> draws, _ = make_draws(y[:200], [5], repeats=1)
    >>> res = run_protocol({"pixels": X[:200]}, y[:200], draws)
    >>> float(res.table.accuracy.iloc[0]) > 0.6
    True
    """
    from tqdm.auto import tqdm

    y = np.asarray(y)
    factory = search_factory or default_search_factory
    rows, predictions = [], {}
    bar = tqdm(
        total=len(spaces) * len(draws), desc="training heads", disable=None if progress else True
    )
    # the per-fit INFO lines of the head search (dozens per curve), unless at DEBUG
    quiet = (
        contextlib.nullcontext()
        if logging.getLogger("deepfeat.classify").isEnabledFor(logging.DEBUG)
        else quieter_logs("deepfeat.classify")
    )
    with bar, quiet:
        for name, X in spaces.items():
            X = np.asarray(X)
            if len(X) != len(y):
                raise ValueError(f"space {name!r} has {len(X)} rows for {len(y)} labels")
            for draw in draws:
                est, tuning, params, seconds = _fit_one(X, y, draw, factory)
                y_pred = est.predict(X[draw.test])
                y_true = y[draw.test]
                proba = (
                    est.predict_proba(X[draw.test]) if hasattr(est, "predict_proba") else None
                )
                cal = None if proba is None else calibration_report(y_true, proba, est.classes_)
                rows.append(
                    {
                        "space": name,
                        "shots": str(draw.shots),
                        "k": draw.k,
                        "repeat": draw.repeat,
                        "seed": draw.seed,
                        "n_train": len(draw.train),
                        "n_test": len(draw.test),
                        "accuracy": accuracy_score(y_true, y_pred),
                        "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
                        "log_loss": float("nan") if cal is None else cal["log_loss"],
                        "ece": float("nan") if cal is None else cal["ece"],
                        "tuning": tuning,
                        "best_params": _jsonable(params),
                        "fit_seconds": seconds,
                    }
                )
                conf = proba.max(axis=1) if proba is not None else np.full(len(draw.test), np.nan)
                predictions[(name, str(draw.shots), draw.repeat)] = {
                    "test": draw.test,
                    "y_pred": y_pred,
                    "confidence": conf,
                }
                bar.update()
    table = pd.DataFrame(rows)
    return ProtocolResult(table=table, predictions=predictions)
