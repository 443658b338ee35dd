"""Parameters declared once: constraints checked by scikit-learn, defaults read from the featurizers.

The estimators of :mod:`deepfeat.classify` declare their allowed values as scikit-learn
does, in a ``_parameter_constraints`` table checked by ``_fit_context`` at the start of
``fit`` (:mod:`sklearn.utils._param_validation`, what scikit-learn's own estimators use);
:class:`DeclaredParams` makes a violation raise deepfeat's
:class:`~deepfeat.exceptions.InvalidParameterError` (exit code 2 on the command line).

The runtime settings the image and text embedders share (where the embeddings go and
how they are computed) are declared here once, with their constraints; their defaults
are those of the featurizers the embedders drive, read from their signatures, so the
two cannot drift (tests/test_param_decl.py fails when they do).
"""

from __future__ import annotations

import inspect
import os
from numbers import Integral, Real
from typing import Any

from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils._param_validation import InvalidParameterError as _SklearnParamError

from deepfeat.exceptions import InvalidParameterError
from deepfeat.featurize.engine import STORAGE_DTYPES
from deepfeat.featurize.featurizer import Featurizer
from deepfeat.featurize.runtime import PRECISIONS
from deepfeat.featurize.text_featurizer import TextFeaturizer

__all__ = [
    "DeclaredParams",
    "IMAGE_DEFAULTS",
    "ON_ERROR",
    "RUNTIME_CONSTRAINTS",
    "RUNTIME_PARAMS",
    "TEXT_DEFAULTS",
    "check_params",
]


def _defaults(cls: type) -> dict[str, Any]:
    return {
        k: p.default
        for k, p in inspect.signature(cls).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


#: Featurizer's keyword defaults: the single source of ImageEmbedder's.
IMAGE_DEFAULTS = _defaults(Featurizer)
#: TextFeaturizer's keyword defaults: the single source of TextEmbedder's.
TEXT_DEFAULTS = _defaults(TextFeaturizer)

ON_ERROR = ("raise", "nan")

#: Settings that say how to compute, not what: they may change after fitting. ``precision``
#: is resolved into the feature space's identity, so changing it reads another space.
#: ``jit`` and ``num_workers`` are the image embedder's only.
RUNTIME_PARAMS = (
    "cache", "device", "precision", "jit", "batch_size", "num_workers", "storage_dtype",
    "lock_timeout", "progress",
)

#: Constraints of the runtime settings both embedders take (and of ``on_error``).
RUNTIME_CONSTRAINTS: dict[str, list[Any]] = {
    "cache": [str, os.PathLike, None],
    "device": [str],
    "precision": [StrOptions(set(PRECISIONS))],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "storage_dtype": [StrOptions(set(STORAGE_DTYPES))],
    "lock_timeout": [Interval(Real, 0, None, closed="left"), None],
    "on_error": [StrOptions(set(ON_ERROR))],
    "progress": ["boolean"],
}


def check_params(estimator: Any) -> None:
    """Check ``estimator``'s parameters against its ``_parameter_constraints``.

    Raises
    ------
    InvalidParameterError
        One line naming the parameter, what it allows and what it got.
    """
    try:
        validate_parameter_constraints(
            estimator._parameter_constraints,
            estimator.get_params(deep=False),
            caller_name=type(estimator).__name__,
        )
    except _SklearnParamError as exc:
        raise InvalidParameterError(str(exc)) from None


class DeclaredParams:
    """Mixin: ``_fit_context`` validation raising deepfeat's :class:`InvalidParameterError`.

    Put it before :class:`~sklearn.base.BaseEstimator` in the bases; decorate ``fit`` with
    ``sklearn.base._fit_context``.
    """

    _parameter_constraints: dict[str, list[Any]] = {}

    def _validate_params(self) -> None:
        check_params(self)
