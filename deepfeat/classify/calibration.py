"""Calibrated probabilities for any head with decision values, by temperature scaling.

Every head the search chooses is wrapped here when ``calibrate=True``: an SVM has no
probabilities of its own, and a logistic regression's are only as good as its
regularisation lets them be (the one-standard-error rule often picks a small ``C``, whose
logits are shrunk towards zero: right labels at 45 % probability).

Why not :class:`~sklearn.calibration.CalibratedClassifierCV` or ``SVC(probability=True)``:
both fit two parameters per class (Platt scaling) on inner cross-validation folds, which
with a handful of images per class either fails (a class absent from a fold) or
overfits. Temperature scaling (Guo et al., ICML 2017) fits a *single* number ``T`` on
out-of-fold decision values, ``p = softmax(decision / T)`` (``sigmoid`` for two classes).
One parameter cannot overfit a few samples, and dividing by ``T > 0`` never changes the
arg-max, so ``predict`` (the arg-max of the decision values) is the SVM's own prediction
and always agrees with ``predict_proba``. The temperature is searched relative to the
spread of the out-of-fold scores (a strongly regularised logistic regression's logits
are a hundred times smaller than an SVM's margins), and kept at 1 (the head's own
probabilities) unless it lowers the out-of-fold log-loss.

scikit-learn's isotonic or per-class sigmoid calibration measures at least as well on
large sets, but calibrates each class on its own and renormalises, which can change the
arg-max: the predicted labels would no longer be the head's.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit, log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import check_cv
from sklearn.svm import LinearSVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from deepfeat.classify.cv import small_data_cv
from deepfeat.classify.metrics import calibration_report

__all__ = [
    "TemperatureScaledClassifier", "TEMPERATURE_BOUNDS", "fit_temperature", "first_covering",
    "out_of_fold_decisions", "temperature_proba",
]

log = logging.getLogger(__name__)

#: Allowed range of the temperature, in units of the standard deviation of the
#: out-of-fold scores (a perfectly separated training set drives T to 0).
TEMPERATURE_BOUNDS = (0.05, 100.0)


def _losses(log_t: float, scores: np.ndarray, codes: np.ndarray, smooth: float = 0.0) -> np.ndarray:
    """Log-loss of each row of ``softmax(scores / T)`` against ``codes``, the targets
    smoothed by ``smooth`` towards uniform (``smooth=0``: the plain log-loss)."""
    z = scores / np.exp(log_t)
    if z.ndim == 1:  # binary: sigmoid
        logp = np.column_stack([log_expit(-z), log_expit(z)])
    else:
        logp = log_softmax(z, axis=1)
    own = logp[np.arange(len(codes)), codes]
    return -((1.0 - smooth) * own + smooth * logp.mean(axis=1))


def _nll(log_t: float, scores: np.ndarray, codes: np.ndarray, smooth: float = 0.0) -> float:
    """Mean of :func:`_losses` (``benchmarks/temperature_rules.py`` uses the rows)."""
    return float(np.mean(_losses(log_t, scores, codes, smooth)))


def temperature_proba(scores: np.ndarray, t: float) -> np.ndarray:
    """Probabilities of decision values ``scores`` at temperature ``t``: softmax of
    ``scores / t`` (sigmoid of one column for two classes); ``t = 1`` is the head's own."""
    z = scores / t
    if z.ndim == 1:
        p1 = expit(z)
        return np.column_stack([1.0 - p1, p1])
    return softmax(z, axis=1)


def fit_temperature(scores: np.ndarray, codes: np.ndarray) -> tuple[float, dict[str, Any]]:
    """The temperature minimising the log-loss of ``softmax(scores / T)`` on ``codes``.

    Parameters
    ----------
    scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        Out-of-fold decision values (one column: the positive class's, sigmoid).
    codes : ndarray of int, shape (n_samples,)
        Index of each sample's true class.

    Returns
    -------
    temperature : float
        The minimiser of the log-loss against targets smoothed by ``1 / (n + 1)``
        towards uniform (so that error-free scores do not give probabilities of 1), or
        1.0 where it does not lower the plain log-loss.
    report : dict
        ``temperature``, ``fitted_temperature`` (the minimiser, kept or not), ``n_oof``
        and the out-of-fold ``log_loss``/``ece`` ``_before`` (``T = 1``) and ``_after``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> codes = rng.integers(0, 3, 300)
    >>> logits = 0.05 * (np.eye(3)[codes] * 3 + rng.normal(size=(300, 3)))  # far too flat
    >>> t, rep = fit_temperature(logits, codes)
    >>> t < 0.1, rep["log_loss_after"] < rep["log_loss_before"]
    (True, True)
    """
    scores = np.asarray(scores, dtype=float)
    codes = np.asarray(codes, dtype=int)
    spread = float(np.std(scores))
    t = fitted = 1.0
    if spread > 0 and np.isfinite(spread) and len(codes):
        lo, hi = np.log(np.asarray(TEMPERATURE_BOUNDS) * spread)
        # targets smoothed by 1/(n+1): out-of-fold scores without a single error would
        # drive T to 0 (probabilities of exactly 1); n right answers support an error
        # rate of about 1/n, not 0
        smooth = 1.0 / (len(codes) + 1)
        res = minimize_scalar(
            _nll, bounds=(lo, hi), args=(scores, codes, smooth), method="bounded"
        )
        fitted = float(np.exp(res.x))
        if _nll(float(res.x), scores, codes) < _nll(0.0, scores, codes):
            t = fitted
    classes = np.arange(scores.shape[1] if scores.ndim == 2 else 2)
    before = calibration_report(codes, temperature_proba(scores, 1.0), classes)
    after = calibration_report(codes, temperature_proba(scores, t), classes)
    report = {
        "method": "temperature",
        "temperature": t,
        "fitted_temperature": fitted,
        "n_oof": int(len(codes)),
        "log_loss_before": before["log_loss"],
        "log_loss_after": after["log_loss"],
        "ece_before": before["ece"],
        "ece_after": after["ece"],
    }
    return t, report


def first_covering(splits: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first splits of ``splits`` that validate every sample once (a repeated K-fold's
    first repeat), or all of them when they never cover every sample."""
    out, seen, n = [], None, None
    for train, test in splits:
        train, test = np.asarray(train), np.asarray(test)
        if n is None:
            n = len(train) + len(test)
            seen = np.zeros(n, dtype=bool)
        out.append((train, test))
        if len(train) + len(test) == n:
            seen[test] = True
            if seen.all():
                break
    return out


def _decisions(est: Any, X: np.ndarray) -> np.ndarray:
    """``est.decision_function(X)`` as floats; one column (two classes) as a vector."""
    d = np.asarray(est.decision_function(X), dtype=float)
    return d.ravel() if d.ndim == 2 and d.shape[1] == 1 else d


def out_of_fold_decisions(
    estimator: Any, X: np.ndarray, y: np.ndarray, cv: Any
) -> tuple[np.ndarray, np.ndarray] | None:
    """Decision values of clones of ``estimator`` on the folds of ``cv`` they did not see.

    Parameters
    ----------
    estimator : classifier with ``decision_function``
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    cv : CV splitter
        Of a repeated K-fold, the first repeat is used (:func:`first_covering`): one
        score per sample. A fold whose training part lacks a class is skipped (it cannot
        give that class's score column).

    Returns
    -------
    (scores, codes) or None
        The concatenated decision values and the class index of each of their rows; None
        when no fold could be used.
    """
    classes, codes = np.unique(y, return_inverse=True)
    scores, targets = [], []
    for train, test in first_covering(cv.split(X, y)):
        if len(np.unique(codes[train])) < len(classes):
            continue
        scores.append(_decisions(clone(estimator).fit(X[train], y[train]), X[test]))
        targets.append(codes[test])
    if not scores:
        return None
    return np.concatenate(scores), np.concatenate(targets)


class TemperatureScaledClassifier(ClassifierMixin, BaseEstimator):
    """Add calibrated ``predict_proba`` to a classifier with a ``decision_function``.

    Parameters
    ----------
    estimator : classifier or None, default=None
        Any classifier with ``decision_function`` (``None``: ``LinearSVC()``).
    cv : int, CV splitter, iterable or None, default=None
        Folds for the out-of-fold decision values (of a repeated K-fold, the first
        repeat: one score per sample); ``None`` uses
        :func:`~deepfeat.classify.cv.small_data_cv`. When some class has a single sample
        no folds are possible and ``T = 1`` is used (logged).
    random_state : int or None, default=0
        Seeds the default folds.

    Attributes
    ----------
    estimator_ : classifier
        ``estimator`` fitted on all the data.
    temperature_ : float
    calibration_ : dict
        What the out-of-fold scores measured: see :func:`fit_temperature` (empty when no
        folds were possible; models saved before deepfeat recorded it lack it).
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> from sklearn.svm import SVC
    >>> X, y = make_blobs(60, centers=3, random_state=0)
    >>> clf = TemperatureScaledClassifier(SVC(kernel="linear", random_state=0)).fit(X, y)
    >>> clf.predict_proba(X[:2]).sum(axis=1).round(6).tolist()
    [1.0, 1.0]
    >>> bool((clf.predict(X) == clf.predict_proba(X).argmax(axis=1)).all())
    True
    """

    def __init__(
        self, estimator: Any = None, *, cv: Any = None, random_state: int | None = 0
    ) -> None:
        self.estimator = estimator
        self.cv = cv
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> TemperatureScaledClassifier:
        """Fit ``T`` on out-of-fold decision values, then ``estimator`` on all data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        base = (
            LinearSVC(random_state=self.random_state) if self.estimator is None else self.estimator
        )
        if not hasattr(base, "decision_function"):
            raise ValueError(f"estimator must have a decision_function, got {type(base).__name__}")
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"a classifier needs at least 2 classes, got 1 class: {self.classes_.tolist()}"
            )
        _, counts = np.unique(codes, return_counts=True)
        self.temperature_ = 1.0
        self.calibration_: dict[str, Any] = {}
        if counts.min() >= 2:
            cv = small_data_cv(y, random_state=self.random_state) if self.cv is None else self.cv
            cv = check_cv(cv, y, classifier=True)
            oof = out_of_fold_decisions(base, X, y, cv)
            if oof is not None:
                self.temperature_, self.calibration_ = fit_temperature(*oof)
        else:
            log.info("a class has a single sample: no out-of-fold scores, temperature left at 1")
        self.estimator_ = clone(base).fit(X, y)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """The wrapped estimator's decision function (unscaled)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return self.estimator_.decision_function(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``softmax(decision / T)`` (sigmoid for two classes).

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return temperature_proba(_decisions(self.estimator_, X), self.temperature_)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        z = _decisions(self.estimator_, X) / self.temperature_
        if z.ndim == 1:
            return np.column_stack([log_expit(-z), log_expit(z)])
        return log_softmax(z, axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """The class with the largest decision value (the arg-max of :meth:`predict_proba`).

        For an ``SVC`` this is its ``break_ties=True`` prediction.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        z = _decisions(self.estimator_, X)
        if z.ndim == 1:
            return self.classes_[(z > 0).astype(int)]
        return self.classes_[np.argmax(z, axis=1)]
