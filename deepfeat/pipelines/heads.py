"""The classifier heads an experiment trains: tuned inside each training split, or fixed.

A *search factory* is a callable ``factory(y_train, seed) -> estimator`` returning an
unfitted scikit-learn estimator that chooses its own hyperparameters by cross-validation
on the training data it is fitted on (nested model selection: the held-out images never
take part). The default is :func:`deepfeat.classify.search.build_search` with folds from
:func:`deepfeat.classify.cv.small_data_cv` drawn from the training labels only.

A learning curve trains dozens of heads, so experiments use the ``"fast"`` search by
default: logistic regression on standardized features, C chosen among 12 values one
decade apart (1e-6 … 1e5), solver tolerance 1e-3 (accuracy is settled long before the
default 1e-4; it halves the time). ``"full"`` is classify's complete default search (every head,
standardized or L2-normalized features, the 45-value logistic-regression path of
Kornblith et al. 2019), several times slower.

When some class has a single training image, cross-validation is impossible;
:func:`fixed_head` then trains classify's documented fallback with no tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from deepfeat.classify.candidates import HEADS, make_head, make_preprocess
from deepfeat.classify.cv import small_data_cv
from deepfeat.classify.search import FALLBACK_PARAMS, build_search
from deepfeat.exceptions import InvalidParameterError

__all__ = [
    "SearchFactory",
    "SEARCHES",
    "FAST_C",
    "describe_search",
    "FIXED_HEAD_DESCRIPTION",
    "default_search_factory",
    "fixed_head",
]

SearchFactory = Callable[[np.ndarray, int], BaseEstimator]

#: Named searches an experiment can run inside each training draw.
SEARCHES = ("fast", "full")
#: The C values of the fast search: one per decade.
FAST_C: tuple[float, ...] = tuple(float(c) for c in np.logspace(-6, 5, 12))
#: Solver tolerance of the fast search.
FAST_TOL = 1e-3

#: What :func:`fixed_head` trains, as stated in reports.
FIXED_HEAD_DESCRIPTION = (
    f"{FALLBACK_PARAMS['preprocess']} + {FALLBACK_PARAMS['head']} "
    f"(C={FALLBACK_PARAMS['C']}), fixed hyperparameters, no tuning"
)


def fixed_head(seed: int = 0) -> BaseEstimator:
    """Return the untuned head used when cross-validation is impossible.

    It is classify's fallback (:data:`deepfeat.classify.search.FALLBACK_PARAMS`), the
    same configuration its search fits when a class has a single example.

    Examples
    --------
    >>> str(fixed_head().fit([[0.0], [1.0]], ["a", "b"]).predict([[0.9]])[0])
    'b'
    """
    return Pipeline(
        [
            ("preprocess", make_preprocess(FALLBACK_PARAMS["preprocess"], random_state=seed)),
            ("head", make_head(FALLBACK_PARAMS["head"], FALLBACK_PARAMS, random_state=seed)),
        ]
    )


def describe_search(search: str) -> str:
    """A phrase for reports naming what ``search`` tries.

    Examples
    --------
    >>> describe_search("fast")
    'logistic regression on standardized features, C in {1e-06, 1e-05, …, 1e+05} (12 values)'
    """
    if search == "fast":
        return (
            f"logistic regression on standardized features, C in {{{FAST_C[0]:.0e}, {FAST_C[1]:.0e}, …, "
            f"{FAST_C[-1]:.0e}}} ({len(FAST_C)} values)"
        )
    if search == "full":
        return (
            "classify's full search: every head, standardized or L2-normalized features, full grids"
        )
    raise InvalidParameterError(f"search must be one of {SEARCHES}, got {search!r}")


def default_search_factory(y_train: np.ndarray, seed: int, *, search: str = "fast") -> Any:
    """Return deepfeat's tuned head for one training split (hyperparameters chosen by CV on it).

    Parameters
    ----------
    y_train : numpy.ndarray
        Labels of the training split (at least two images per class).
    seed : int
        Seeds the folds and the estimator.
    search : {"fast", "full"}
        What to search (see the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([0, 0, 0, 1, 1, 1])
    >>> X = np.array([[0.0], [0.1], [0.2], [1.0], [1.1], [1.2]])
    >>> int(default_search_factory(y, 0).fit(X, y).predict([[1.05]])[0])
    1
    """
    describe_search(search)  # validates
    cv = small_data_cv(y_train, random_state=seed)
    if search == "full":  # the previous classify default, as described above
        return build_search(HEADS, cv=cv, random_state=seed, y=y_train).set_params(
            preprocessing=("standardize", "l2"), grid="full"
        )
    return build_search("logreg", cv=cv, random_state=seed, y=y_train).set_params(
        preprocessing=("standardize",), param_grid={"logreg": {"C": FAST_C}}, tol=FAST_TOL
    )
