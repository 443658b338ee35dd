"""Evaluation of predictions: the numbers ``deepfeat evaluate`` reports, and their text form.

Calibration (how far the probability shown beside a prediction is from how often such
predictions are right) is measured here and only here: :func:`calibration_report` gives
the log-loss, the expected calibration error and the reliability bins that ``fit``,
``evaluate``, ``experiment`` and the calibration step of the head search all use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from deepfeat.process_state import ignoring_warnings

__all__ = [
    "ECE_BINS",
    "calibration_report",
    "expected_calibration_error",
    "reliability_bins",
    "evaluation_report",
    "format_calibration",
    "format_report",
]

#: Equal-width confidence bins of the expected calibration error.
ECE_BINS = 10


def reliability_bins(
    confidence: Sequence[float], correct: Sequence[bool], n_bins: int = ECE_BINS
) -> list[dict[str, Any]]:
    """Equal-width bins of the predicted class's probability: per bin ``low``, ``high``,
    ``n``, mean ``confidence`` and ``accuracy`` (None for an empty bin)."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds confidences in (edges[i], edges[i+1]]; a confidence of 0 goes to bin 0
    idx = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    bins = []
    for i in range(n_bins):
        m = idx == i
        n = int(m.sum())
        bins.append(
            {
                "low": float(edges[i]),
                "high": float(edges[i + 1]),
                "n": n,
                "confidence": float(confidence[m].mean()) if n else None,
                "accuracy": float(correct[m].mean()) if n else None,
            }
        )
    return bins


def expected_calibration_error(
    confidence: Sequence[float], correct: Sequence[bool], *, n_bins: int = ECE_BINS
) -> float:
    """Top-label expected calibration error (equal-width bins).

    ``sum_b |B_b| / n * |accuracy(B_b) - mean confidence(B_b)|`` over the bins of the
    predicted class's probability (Guo et al., 2017).

    Parameters
    ----------
    confidence : array-like of shape (n_samples,)
        Probability of the predicted class.
    correct : array-like of bool, shape (n_samples,)
        Whether the prediction was right.
    n_bins : int, default=10

    Returns
    -------
    float
        NaN for no samples.

    Examples
    --------
    >>> expected_calibration_error([0.9, 0.9, 0.6, 0.6], [True, False, True, False])
    0.25
    """
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    if conf.shape != ok.shape:
        raise ValueError(f"confidence and correct differ in shape: {conf.shape} vs {ok.shape}")
    if conf.size == 0:
        return float("nan")
    bins = reliability_bins(conf, ok, n_bins)
    gap = sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["n"])
    return float(round(gap / conf.size, 12))


def calibration_report(
    y_true: Sequence[Any],
    proba: np.ndarray,
    classes: Sequence[Any],
    *,
    n_bins: int = ECE_BINS,
) -> dict[str, Any]:
    """Log-loss, top-label expected calibration error and reliability bins of ``proba``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    proba : ndarray of shape (n_samples, n_classes)
        Columns in ``classes`` order; the predicted class is the arg-max.
    classes : sequence
        The model's classes. A true label outside them has probability 0 (its log-loss
        term is clipped at ``-log(1e-15)``, as scikit-learn's).
    n_bins : int, default=10

    Returns
    -------
    dict
        ``log_loss``, ``ece``, ``mean_confidence``, ``accuracy``, ``n``, ``n_bins``
        and ``reliability`` (one dict per bin: ``low``, ``high``, ``n``, ``confidence``,
        ``accuracy``; the last two None for an empty bin).

    Examples
    --------
    >>> r = calibration_report(["a", "b"], np.array([[0.8, 0.2], [0.3, 0.7]]), ["a", "b"])
    >>> round(r["log_loss"], 4), round(r["ece"], 2)
    (0.2899, 0.25)
    """
    proba = np.asarray(proba, dtype=float)
    classes = np.asarray(classes)
    y = np.asarray(y_true)
    if proba.ndim != 2 or proba.shape != (len(y), len(classes)):
        raise ValueError(
            f"proba must have shape (n_samples, n_classes) = ({len(y)}, {len(classes)}), "
            f"got {proba.shape}"
        )
    lookup = {str(c): i for i, c in enumerate(classes)}
    pos = np.array([lookup.get(str(v), -1) for v in y], dtype=int)
    p_true = np.where(pos >= 0, proba[np.arange(len(y)), np.maximum(pos, 0)], 0.0)
    eps = 1e-15
    pred = np.argmax(proba, axis=1) if len(y) else np.zeros(0, dtype=int)
    conf = proba[np.arange(len(y)), pred] if len(y) else np.zeros(0)
    correct = pred == pos
    return {
        "n": int(len(y)),
        "n_bins": int(n_bins),
        "log_loss": float(-np.mean(np.log(np.clip(p_true, eps, 1.0)))) if len(y) else float("nan"),
        "ece": expected_calibration_error(conf, correct, n_bins=n_bins),
        "mean_confidence": float(conf.mean()) if len(y) else float("nan"),
        "accuracy": float(correct.mean()) if len(y) else float("nan"),
        "reliability": reliability_bins(conf, correct.astype(float), n_bins),
    }


def evaluation_report(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    *,
    labels: Sequence[Any] | None = None,
    proba: np.ndarray | None = None,
    classes: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, per-class precision/recall and confusion matrix.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
    labels : sequence or None, default=None
        Row/column order of the confusion matrix (default: sorted union of both).
    proba, classes : ndarray of shape (n_samples, n_classes) and its column labels, optional
        The model's probabilities: adds ``calibration`` (:func:`calibration_report`).

    Returns
    -------
    dict
        ``n``, ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``labels`` (str),
        ``per_class`` (``{label: {"precision", "recall", "f1", "support"}}``) and
        ``confusion_matrix`` (list of rows: true label; columns: predicted label). An
        undefined precision (a class never predicted) is reported as 0. With ``proba``
        also ``calibration``.

    Examples
    --------
    >>> r = evaluation_report(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    >>> r["accuracy"], r["confusion_matrix"]
    (0.75, [[1, 1], [0, 2]])
    """
    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    if labels is None:
        labels = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    labels = [str(v) for v in labels]
    with (
        ignoring_warnings(UndefinedMetricWarning),
        ignoring_warnings(Warning, message="y_pred contains classes not in y_true"),
    ):
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        present = [lab for lab in labels if lab in set(y_true.tolist())]
        _, _, macro_f1, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=present, average="macro", zero_division=0
        )
        balanced = balanced_accuracy_score(y_true, y_pred)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    extra = {}
    if proba is not None:
        if classes is None:
            raise ValueError("evaluation_report: proba needs classes (its column labels)")
        extra["calibration"] = calibration_report(y_true, proba, classes)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced),
        "macro_f1": float(macro_f1),
        "labels": labels,
        "per_class": {
            lab: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, lab in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
        **extra,
    }


def format_calibration(cal: dict[str, Any]) -> str:
    """One line: log-loss, expected calibration error and mean confidence vs accuracy.

    Examples
    --------
    >>> format_calibration({"log_loss": 0.31, "ece": 0.042, "mean_confidence": 0.85,
    ...                     "accuracy": 0.88, "n_bins": 10})
    'log-loss 0.3100   calibration error (ECE, 10 bins) 0.0420   mean top probability 0.850 at accuracy 0.880'
    """
    return (
        f"log-loss {cal['log_loss']:.4f}   calibration error (ECE, {cal['n_bins']} bins) "
        f"{cal['ece']:.4f}   mean top probability {cal['mean_confidence']:.3f} at accuracy "
        f"{cal['accuracy']:.3f}"
    )


def format_report(report: dict[str, Any]) -> str:
    """Render :func:`evaluation_report` as text (summary, per-class table, confusion matrix).

    Examples
    --------
    >>> print(format_report(evaluation_report(["a", "b"], ["a", "b"])).splitlines()[0])
    accuracy 1.0000   balanced accuracy 1.0000   macro F1 1.0000   (n=2)
    """
    labels = report["labels"]
    lines = [
        f"accuracy {report['accuracy']:.4f}   balanced accuracy {report['balanced_accuracy']:.4f}   "
        f"macro F1 {report['macro_f1']:.4f}   (n={report['n']})",
    ]
    if report.get("calibration"):
        lines.append(format_calibration(report["calibration"]))
    lines.append("")
    w = max([5] + [len(lab) for lab in labels])
    lines.append(f"{'class':<{w}}  precision  recall     f1  support")
    for lab in labels:
        c = report["per_class"][lab]
        lines.append(
            f"{lab:<{w}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:5.3f}  {c['support']:7d}"
        )
    cm = report["confusion_matrix"]
    if len(labels) > MAX_PRINTED_MATRIX:
        lines += ["", _top_confusions(labels, cm)]
        return "\n".join(lines)
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    cw = max([w] + [len(str(v)) for row in cm for v in row])
    lines.append(" " * (w + 2) + "  ".join(f"{lab:>{cw}}" for lab in labels))
    for lab, row in zip(labels, cm):
        lines.append(f"{lab:<{w}}  " + "  ".join(f"{v:>{cw}}" for v in row))
    return "\n".join(lines)


#: Beyond this many classes the text report lists the commonest confusions, not the matrix.
MAX_PRINTED_MATRIX = 20


def _top_confusions(labels: Sequence[str], cm: Sequence[Sequence[int]], n: int = 20) -> str:
    """The ``n`` largest off-diagonal cells of the confusion matrix, as lines of text."""
    m = np.asarray(cm)
    off = m - np.diag(np.diag(m))
    cells = np.argwhere(off > 0)
    cells = cells[np.lexsort((cells[:, 1], cells[:, 0], -off[cells[:, 0], cells[:, 1]]))][:n]
    head = (f"{len(labels)} classes: the confusion matrix is in --json; the "
            f"{len(cells)} commonest confusions (true -> predicted: images)")
    if not len(cells):
        return f"{len(labels)} classes: no confusions"
    return "\n".join([head] + [f"  {labels[t]} -> {labels[p]}: {off[t, p]}" for t, p in cells])
