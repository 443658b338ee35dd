"""The heads, preprocessing steps and hyperparameter grids the search chooses from.

Heads
    ``"logreg"``: L2-regularised (multinomial) logistic regression, lbfgs.
    ``"linsvm"``: linear support vector machine (libsvm, hinge loss).
    ``"rbfsvm"``: RBF-kernel support vector machine.

Preprocessing (fitted on the training folds only; chain steps with ``"+"``, e.g.
``"l2+standardize"``)
    ``"none"``, ``"l2"`` (each row scaled to unit length), ``"standardize"`` (zero mean,
    unit variance per feature), ``"pca"`` (principal components keeping
    :data:`PCA_VARIANCE` of the variance), ``"pca_whiten"`` (the same, whitened).

Grids
    ``"compact"`` (the default) is few, well-placed values: 15 values of ``C`` for
    logistic regression and 7 for the linear SVM, half a decade or a decade apart, *relative
    to the scale of the preprocessed features* (a value ``c`` becomes ``c / s`` with ``s``
    the mean squared row norm per feature of the preprocessed training data: 1 for
    standardized features), so one grid suits every preprocessing; the RBF SVM gets 4 x 3
    values. With fewer candidates the choice follows noise less, and it costs less.
    ``"full"`` (:data:`FULL_GRID`), the larger grid: the logistic-regression
    grid is the reference protocol of Kornblith, Shlens & Le,
    "Do Better ImageNet Models Transfer Better?" (CVPR 2019): 45 log-spaced values of
    ``C`` from 1e-6 to 1e5. The RBF ``gamma`` values are *factors* of scikit-learn's
    ``gamma="scale"`` (``1 / (n_features * X.var())`` on the preprocessed training
    data), so one grid suits any embedding width and preprocessing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC

from deepfeat.exceptions import InvalidParameterError

__all__ = [
    "HEADS",
    "AUTO",
    "LINSVM_MAX_ROWS",
    "COMPACT_GRID",
    "GRIDS",
    "resolve_heads",
    "resolve_preprocessing",
    "PREPROCESSING_STEPS",
    "DEFAULT_HEADS",
    "DEFAULT_PREPROCESSING",
    "FULL_GRID",
    "PCA_VARIANCE",
    "check_heads",
    "check_preprocessing",
    "resolve_grid",
    "make_preprocess",
    "make_head",
]

HEADS = ("logreg", "linsvm", "rbfsvm")
#: ``heads="auto"``: logistic regression, plus the linear SVM while it is affordable.
AUTO = "auto"
#: Above this many training rows ``heads="auto"`` leaves the (quadratic) linear SVM out.
LINSVM_MAX_ROWS = 2000
#: Above this many classes ``heads="auto"`` leaves the linear SVM out too: libsvm trains and
#: evaluates one classifier per pair of classes (1,225 at 50 classes, 44,850 at 300), and a
#: 300-class fit spent most of an hour in its one-vs-one decision function.
LINSVM_MAX_CLASSES = 50
PREPROCESSING_STEPS = ("none", "l2", "standardize", "pca", "pca_whiten")
DEFAULT_HEADS = AUTO
#: ``preprocessing="auto"``: standardized and L2-normalized up to L2_MAX_ROWS rows
#: (with a few images per class, per-feature scales estimated from them are noisy and
#: L2 normalization wins: measured 0.89 vs 0.98 held out with 10 images per class),
#: standardized only beyond (on oxford17, 680 rows, adding L2 made the choice noisier).
DEFAULT_PREPROCESSING = AUTO
#: Up to this many rows ``preprocessing="auto"`` also tries L2 normalization.
L2_MAX_ROWS = 300
#: Fraction of the variance the ``"pca"`` steps keep.
PCA_VARIANCE = 0.95

#: Default values searched for each head (see the module docstring).
FULL_GRID: dict[str, dict[str, tuple[float, ...]]] = {
    "logreg": {"C": tuple(np.logspace(-6, 5, 45).tolist())},
    "linsvm": {"C": tuple(np.logspace(-5, 3, 9).tolist())},
    "rbfsvm": {
        "C": tuple(np.logspace(-1, 4, 6).tolist()),
        "gamma_factor": tuple(np.logspace(-2, 1, 7).tolist()),
    },
}

#: The default grid (see the module docstring): values relative to the feature scale.
COMPACT_GRID: dict[str, dict[str, tuple[float, ...]]] = {
    "logreg": {"C": tuple(np.logspace(-5, 2, 15).tolist())},
    "linsvm": {"C": tuple(np.logspace(-6, 0, 7).tolist())},
    "rbfsvm": {
        "C": tuple(np.logspace(0, 3, 4).tolist()),
        "gamma_factor": (0.3, 1.0, 3.0),
    },
}
#: Named grids: ``grid=`` of the search.
GRIDS = {"compact": COMPACT_GRID, "full": FULL_GRID}


def _names(value: str | Sequence[str] | None, default: Sequence[str], what: str) -> tuple[str, ...]:
    if value is None:
        return tuple(default)
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    try:
        names = tuple(value)
    except TypeError:
        raise InvalidParameterError(
            f"{what} must be a string or a sequence of strings, got {value!r}"
        ) from None
    if not names or not all(isinstance(v, str) for v in names):
        raise InvalidParameterError(f"{what} must be a non-empty string or sequence of strings, got {value!r}")
    if len(set(names)) != len(names):
        raise InvalidParameterError(f"{what} lists a value twice: {list(names)}")
    return names


def check_heads(heads: str | Sequence[str] | None) -> tuple[str, ...]:
    """Validate ``heads`` (a sequence or a comma-separated string) and return a tuple.

    Examples
    --------
    >>> check_heads("logreg,rbfsvm")
    ('logreg', 'rbfsvm')
    """
    names = _names(heads, (AUTO,), "heads")
    if AUTO in names:
        if len(names) > 1:
            raise InvalidParameterError(f"heads: 'auto' stands alone, got {list(names)}")
        return names
    bad = [h for h in names if h not in HEADS]
    if bad:
        raise InvalidParameterError(f"heads must be among {HEADS} or 'auto', got unknown {bad}")
    return names


def resolve_preprocessing(preprocessing: Sequence[str], n_samples: int) -> tuple[str, ...]:
    """The preprocessing choices to search (see :data:`DEFAULT_PREPROCESSING`).

    Examples
    --------
    >>> resolve_preprocessing(("auto",), 200), resolve_preprocessing(("auto",), 5000)
    (('standardize', 'l2'), ('standardize',))
    """
    if tuple(preprocessing) != (AUTO,):
        return tuple(preprocessing)
    return ("standardize", "l2") if n_samples <= L2_MAX_ROWS else ("standardize",)


def resolve_heads(heads: Sequence[str], n_samples: int, n_classes: int = 2) -> tuple[str, ...]:
    """The heads to search: ``("auto",)`` becomes logistic regression, plus the linear SVM
    when there are at most :data:`LINSVM_MAX_ROWS` rows (its cost grows with their square)
    and at most :data:`LINSVM_MAX_CLASSES` classes (it is one-vs-one).

    Examples
    --------
    >>> resolve_heads(("auto",), 500), resolve_heads(("auto",), 5000)
    (('logreg', 'linsvm'), ('logreg',))
    >>> resolve_heads(("auto",), 900, n_classes=300)
    ('logreg',)
    """
    if tuple(heads) != (AUTO,):
        return tuple(heads)
    if n_samples <= LINSVM_MAX_ROWS and n_classes <= LINSVM_MAX_CLASSES:
        return ("logreg", "linsvm")
    return ("logreg",)


def check_preprocessing(preprocessing: str | Sequence[str] | None) -> tuple[str, ...]:
    """Validate preprocessing choices (steps chained with ``"+"``) and return a tuple.

    Examples
    --------
    >>> check_preprocessing(["l2+standardize", "pca_whiten"])
    ('l2+standardize', 'pca_whiten')
    """
    names = _names(preprocessing, (AUTO,), "preprocessing")
    if AUTO in names:
        if len(names) > 1:
            raise InvalidParameterError(f"preprocessing: 'auto' stands alone, got {list(names)}")
        return names
    for name in names:
        bad = [s for s in name.split("+") if s not in PREPROCESSING_STEPS]
        if bad:
            raise InvalidParameterError(
                f"preprocessing {name!r}: unknown step(s) {bad}; steps are {PREPROCESSING_STEPS}, "
                f"chained with '+'"
            )
    return names


def resolve_grid(
    heads: Sequence[str],
    param_grid: Mapping[str, Mapping[str, Sequence[float]]] | None,
    base: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> dict[str, dict[str, tuple[float, ...]]]:
    """Merge user overrides into ``base`` (default :data:`FULL_GRID`) for ``heads``;
    values sorted ascending.

    Parameters
    ----------
    heads : sequence of str
    param_grid : dict or None
        ``{head: {param: values}}``; any head or parameter left out keeps its default.

    Examples
    --------
    >>> resolve_grid(["logreg"], {"logreg": {"C": [10, 0.1]}})
    {'logreg': {'C': (0.1, 10.0)}}
    """
    param_grid = {} if param_grid is None else param_grid
    if not isinstance(param_grid, Mapping):
        raise InvalidParameterError(
            f"param_grid must be a dict {{head: {{param: values}}}} or None, got {param_grid!r}"
        )
    unknown = [h for h in param_grid if h not in HEADS]
    if unknown:
        raise InvalidParameterError(f"param_grid: unknown head(s) {unknown}; heads are {HEADS}")
    base = FULL_GRID if base is None else base
    grid: dict[str, dict[str, tuple[float, ...]]] = {}
    for head in heads:
        over = param_grid.get(head, {})
        bad = [p for p in over if p not in FULL_GRID[head]]
        if bad:
            raise InvalidParameterError(
                f"param_grid[{head!r}]: unknown parameter(s) {bad}; {head} takes {list(FULL_GRID[head])}"
            )
        grid[head] = {}
        for param, default in base[head].items():
            values = np.asarray(over.get(param, default), dtype=float).ravel()
            if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
                raise InvalidParameterError(
                    f"param_grid[{head!r}][{param!r}] must be positive numbers, got {values}"
                )
            grid[head][param] = tuple(sorted(set(values.tolist())))
    return grid


def _step(name: str, random_state: int | None) -> BaseEstimator | str:
    if name == "none":
        return "passthrough"
    if name == "l2":
        return Normalizer()
    if name == "standardize":
        return StandardScaler()
    whiten = name == "pca_whiten"
    return PCA(
        n_components=PCA_VARIANCE, svd_solver="full", whiten=whiten, random_state=random_state
    )


def make_preprocess(name: str, random_state: int | None = 0) -> Pipeline:
    """Return the unfitted preprocessing pipeline for ``name`` (e.g. ``"l2+standardize"``).

    Examples
    --------
    >>> make_preprocess("l2+standardize").steps
    [('l2', Normalizer()), ('standardize', StandardScaler())]
    """
    (name,) = check_preprocessing([name])
    return Pipeline([(s, _step(s, random_state)) for s in name.split("+")])


def make_head(
    head: str,
    params: Mapping[str, Any],
    *,
    class_weight: Any = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    random_state: int | None = 0,
) -> BaseEstimator:
    """Return the unfitted head ``head`` with concrete ``params`` (``C``, ``gamma``).

    Examples
    --------
    >>> make_head("linsvm", {"C": 0.5})
    SVC(C=0.5, break_ties=True, kernel='linear', random_state=0)
    """
    if head == "logreg":
        return LogisticRegression(
            C=params["C"],
            solver="lbfgs",
            max_iter=max_iter,
            tol=tol,
            class_weight=class_weight,
            random_state=random_state,
        )
    if head == "linsvm":
        return SVC(
            kernel="linear",
            C=params["C"],
            class_weight=class_weight,
            break_ties=True,
            random_state=random_state,
        )
    if head == "rbfsvm":
        return SVC(
            kernel="rbf",
            C=params["C"],
            gamma=params["gamma"],
            class_weight=class_weight,
            break_ties=True,
            random_state=random_state,
        )
    raise InvalidParameterError(f"head must be one of {HEADS}, got {head!r}")
