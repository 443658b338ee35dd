"""Evaluation of predictions: the numbers ``deepfeat evaluate`` reports, and their text form."""

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

__all__ = ["evaluation_report", "format_report"]


def evaluation_report(
    y_true: Sequence[Any], y_pred: Sequence[Any], *, labels: Sequence[Any] | None = None
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, per-class precision/recall and confusion matrix.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
    labels : sequence or None, default=None
        Row/column order of the confusion matrix (default: sorted union of both).

    Returns
    -------
    dict
        ``n``, ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``labels`` (str),
        ``per_class`` (``{label: {"precision", "recall", "f1", "support"}}``) and
        ``confusion_matrix`` (list of rows: true label; columns: predicted label). An
        undefined precision (a class never predicted) is reported as 0.

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
    }


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
        "",
    ]
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
