"""A fitted scikit-learn head (preprocessing + classifier) as a torch module, for export.

Expressible, and exported exactly (same arithmetic, float32):

* preprocessing steps ``none``, ``l2`` (:class:`~sklearn.preprocessing.Normalizer`),
  ``standardize`` (:class:`~sklearn.preprocessing.StandardScaler`), ``pca`` and
  ``pca_whiten`` (:class:`~sklearn.decomposition.PCA`): each an affine map or a row
  normalisation;
* ``logreg`` (:class:`~sklearn.linear_model.LogisticRegression`): ``softmax(x W + b)``,
  a sigmoid for two classes, divided by the temperature first when it is wrapped in a
  :class:`~deepfeat.classify.calibration.TemperatureScaledClassifier`;
* ``linsvm`` with temperature scaling
  (:class:`~deepfeat.classify.calibration.TemperatureScaledClassifier` around an
  ``SVC(kernel="linear")``): the SVM's one-vs-one decision values ``x W + b``, combined
  into scikit-learn's one-vs-rest decision (votes plus scaled confidences), divided by the
  temperature, then a softmax (a sigmoid for two classes).

Refused by name: kernel SVMs (``rbfsvm``: the decision is a sum over the training set's
support vectors, kept out of the file by design) and any head without probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC

from deepfeat.classify.calibration import TemperatureScaledClassifier
from deepfeat.exceptions import InputError

__all__ = ["head_module", "ExportRefused"]


class ExportRefused(InputError):
    """The model holds a part that cannot be expressed as an ONNX graph (it is named)."""


def _t(a: Any) -> torch.Tensor:
    return torch.tensor(np.array(a, dtype=np.float64), dtype=torch.float32)


class _Affine(torch.nn.Module):
    """``(x - shift) @ weight * scale`` with any part optional."""

    def __init__(self, shift: Any = None, weight: Any = None, scale: Any = None) -> None:
        super().__init__()
        self.register_buffer("shift", None if shift is None else _t(shift))
        self.register_buffer("weight", None if weight is None else _t(weight))
        self.register_buffer("scale", None if scale is None else _t(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shift is not None:
            x = x - self.shift
        if self.weight is not None:
            x = x @ self.weight
        if self.scale is not None:
            x = x * self.scale
        return x


class _L2(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        return x / torch.where(n == 0, torch.ones_like(n), n)  # sklearn leaves zero rows as they are


class _Softmax(torch.nn.Module):
    """Class probabilities from decision values: softmax, or a sigmoid for one column."""

    def __init__(self, temperature: float = 1.0, *, binary: bool = False) -> None:
        super().__init__()
        self.inv_t = 1.0 / float(temperature)
        self.binary = binary

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * self.inv_t
        if self.binary:
            p1 = torch.sigmoid(z)
            return torch.cat([1.0 - p1, p1], dim=1)
        return torch.softmax(z, dim=1)


class _OvoToOvr(torch.nn.Module):
    """scikit-learn's ``_ovr_decision_function`` of one-vs-one decision values."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]
        win_i = np.zeros((len(pairs), n_classes))
        win_j = np.zeros((len(pairs), n_classes))
        for k, (i, j) in enumerate(pairs):
            win_i[k, i] = 1.0
            win_j[k, j] = 1.0
        self.register_buffer("win_i", _t(win_i))
        self.register_buffer("win_j", _t(win_j))

    def forward(self, dec: torch.Tensor) -> torch.Tensor:
        i_wins = (dec >= 0).to(dec.dtype)  # libsvm: a non-negative value votes for class i
        votes = i_wins @ self.win_i + (1.0 - i_wins) @ self.win_j
        conf = dec @ (self.win_i - self.win_j)
        return votes + conf / (3.0 * (torch.abs(conf) + 1.0))


def _step(name: str, step: Any) -> torch.nn.Module:
    if step is None or step == "passthrough":
        return torch.nn.Identity()
    if isinstance(step, Normalizer):
        if step.norm != "l2":
            raise ExportRefused(f"preprocessing step {name!r}: Normalizer(norm={step.norm!r}) is not exported (only l2)")
        return _L2()
    if isinstance(step, StandardScaler):
        mean = step.mean_ if step.with_mean else None
        scale = 1.0 / step.scale_ if step.with_std else None
        return _Affine(shift=mean, scale=scale)
    if isinstance(step, PCA):
        scale = 1.0 / np.sqrt(step.explained_variance_) if step.whiten else None
        return _Affine(shift=step.mean_, weight=step.components_.T, scale=scale)
    raise ExportRefused(
        f"preprocessing step {name!r} ({type(step).__name__}) cannot be exported to ONNX; "
        f"exportable steps: none, l2, standardize, pca, pca_whiten"
    )


def _classifier(head: Any, n_classes: int) -> list[torch.nn.Module]:
    if isinstance(head, LogisticRegression):
        return [_Affine(weight=head.coef_.T), _Bias(head.intercept_), _Softmax(binary=n_classes == 2)]
    if isinstance(head, TemperatureScaledClassifier) and isinstance(head.estimator_, LogisticRegression):
        lr = head.estimator_
        return [_Affine(weight=lr.coef_.T), _Bias(lr.intercept_),
                _Softmax(head.temperature_, binary=n_classes == 2)]
    if isinstance(head, TemperatureScaledClassifier):
        svm = head.estimator_
        if not (isinstance(svm, SVC) and svm.kernel == "linear"):
            kind = f"SVC(kernel={svm.kernel!r})" if isinstance(svm, SVC) else type(svm).__name__
            raise ExportRefused(
                f"head {kind} cannot be exported to ONNX: a kernel SVM's decision is a sum over "
                f"its training set's support vectors; refit with --heads logreg,linsvm to export"
            )
        parts: list[torch.nn.Module] = [_Affine(weight=svm.coef_.T), _Bias(svm.intercept_)]
        if n_classes > 2:
            parts.append(_OvoToOvr(n_classes))
        parts.append(_Softmax(head.temperature_, binary=n_classes == 2))
        return parts
    if isinstance(head, SVC):
        kernel = "rbfsvm, " if head.kernel == "rbf" else ""
        raise ExportRefused(
            f"head SVC(kernel={head.kernel!r}) ({kernel}without temperature scaling) has no "
            f"probabilities to export; fit with calibration on (the default) and --heads logreg,linsvm"
        )
    raise ExportRefused(
        f"head {type(head).__name__} cannot be exported to ONNX; exportable heads: logreg, linsvm"
    )


class _Bias(torch.nn.Module):
    def __init__(self, bias: Any) -> None:
        super().__init__()
        self.register_buffer("bias", _t(np.ravel(bias)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


def head_module(pipeline: Pipeline, n_classes: int) -> torch.nn.Module:
    """Embeddings ``(N, D)`` float32 -> class probabilities ``(N, n_classes)``.

    The last module turns decision values into probabilities: ``module[:-1]`` gives the
    pipeline's ``decision_function`` (what the export checks against scikit-learn).

    Parameters
    ----------
    pipeline : Pipeline
        :attr:`EmbeddingClassifier.best_estimator_ <deepfeat.classify.search.EmbeddingClassifier>`:
        ``("preprocess", Pipeline of steps)``, ``("head", classifier)``.
    n_classes : int

    Raises
    ------
    ExportRefused
        Naming the step or head that cannot be expressed.
    """
    mods: list[torch.nn.Module] = []
    *pre, (_, head) = pipeline.steps
    for name, step in pre:
        if isinstance(step, Pipeline):
            mods.extend(_step(n, s) for n, s in step.steps)
        else:
            mods.append(_step(name, step))
    mods.extend(_classifier(head, n_classes))
    return torch.nn.Sequential(*mods).eval()
