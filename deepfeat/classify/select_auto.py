""":class:`AutoSpaceClassifier`: the automatic space + head choice as one estimator on arrays.

Its input is the column-wise concatenation of several feature blocks (``blocks`` says
which columns belong to which); ``fit`` runs
:func:`~deepfeat.classify.select_space.select_space` on the candidate spaces made of them
(``spaces``: ``deepfeat fit``'s own candidates; by default each block, and the first block
concatenated with each later one) and keeps the choice. This is what
``deepfeat experiment --select auto`` fits inside every training draw, so the held-out
images of the draw never take part in choosing the space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from deepfeat.classify.search import EmbeddingClassifier
from deepfeat.classify.select_space import MAX_CV_SPACES, select_space
from deepfeat.classify.spaces import join_parts
from deepfeat.exceptions import InvalidParameterError

__all__ = ["AutoSpaceClassifier"]


class AutoSpaceClassifier(ClassifierMixin, BaseEstimator):
    """Choose a feature space (column block) and a head by CV, on concatenated blocks.

    Parameters
    ----------
    blocks : sequence of (name, start, stop)
        Column ranges of the feature blocks in ``X``, the preferred one first.
    spaces : sequence of (name, sequence of block names) or None, default=None
        The candidate spaces, most preferred first, each made of blocks side by side
        (joined as ``deepfeat fit`` joins the parts of a space). ``None``: every block,
        and with ``concat`` the first concatenated with each later one.
    concat : bool, default=True
        With ``spaces=None``, also try the first block concatenated with each later block.
    costs : mapping of str to float or None, default=None
        Forward passes per image of each candidate space, for the cost-aware rule of
        :func:`~deepfeat.classify.select_space.select_space`.
    max_cv_spaces : int, default=5
    random_state : int or None, default=0

    Attributes
    ----------
    space_ : str
        The chosen space (block names joined by ``+`` for a concatenation).
    columns_ : list of ndarray of int
        Its columns in ``X``, one array per part; a concatenation's parts are joined by
        :func:`~deepfeat.classify.spaces.join_parts`, as ``deepfeat fit`` joins them.
    search_ : EmbeddingClassifier
    best_params_ : dict
        ``{"space": space_, **search_.best_params_}``.
    best_score_, honest_score_ : float
    classes_ : ndarray

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(n_class=3, return_X_y=True)
    >>> noise = np.random.default_rng(0).normal(size=(len(y), 16))
    >>> clf = AutoSpaceClassifier([("noise", 0, 16), ("digits", 16, 80)])
    >>> clf.fit(np.hstack([noise, X]), y).space_ in ("digits", "noise+digits")
    True
    >>> clf = AutoSpaceClassifier([("noise", 0, 16), ("digits", 16, 80)],
    ...                           spaces=[("noise", ["noise"]), ("both", ["noise", "digits"])])
    >>> clf.fit(np.hstack([noise, X]), y).space_
    'both'

    """

    def __init__(
        self,
        blocks: Sequence[tuple[str, int, int]] = (),
        *,
        spaces: Sequence[tuple[str, Sequence[str]]] | None = None,
        concat: bool = True,
        costs: Mapping[str, float] | None = None,
        max_cv_spaces: int = MAX_CV_SPACES,
        ordered: bool = False,
        random_state: int | None = 0,
    ) -> None:
        self.blocks = blocks
        self.spaces = spaces
        self.concat = concat
        self.costs = costs
        self.max_cv_spaces = max_cv_spaces
        self.ordered = ordered
        self.random_state = random_state

    def _spaces(self, n_features: int) -> dict[str, list[np.ndarray]]:
        if not self.blocks:
            raise InvalidParameterError("blocks: give at least one (name, start, stop) column range")
        cols = {}
        for name, start, stop in self.blocks:
            if not 0 <= start < stop <= n_features:
                raise InvalidParameterError(f"blocks: {name!r} columns {start}:{stop} outside 0:{n_features}")
            cols[name] = [np.arange(start, stop)]
        if self.spaces is not None:
            if not self.spaces:
                raise InvalidParameterError("spaces: give at least one candidate space, or None")
            out = {}
            for name, parts in self.spaces:
                unknown = [p for p in parts if p not in cols]
                if unknown or not parts:
                    raise InvalidParameterError(
                        f"spaces: {name!r} names blocks {unknown or list(parts)} not in blocks "
                        f"({', '.join(cols)})"
                    )
                out[name] = [c for p in parts for c in cols[p]]
            return out
        if self.concat and len(self.blocks) > 1:
            first = self.blocks[0][0]
            for name, _, _ in self.blocks[1:]:
                cols[f"{first}+{name}"] = cols[first] + cols[name]
        return cols

    def fit(self, X: Any, y: Any) -> AutoSpaceClassifier:
        """Choose the space and head on ``X`` (all blocks side by side), ``y``.

        Returns
        -------
        self
        """
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        cols = self._spaces(X.shape[1])
        choice = select_space(
            {n: join_parts([X[:, c] for c in parts]) for n, parts in cols.items()},
            y,
            EmbeddingClassifier(random_state=self.random_state),
            max_cv_spaces=self.max_cv_spaces,
            costs=self.costs,
            ordered=self.ordered,
        )
        self.space_ = choice.space
        self.columns_ = cols[choice.space]
        self.search_ = choice.search
        self.classes_ = choice.search.classes_
        self.best_params_ = {"space": choice.space, **choice.search.best_params_}
        self.best_score_ = choice.optimistic_score
        self.honest_score_ = choice.honest_score
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class of each row."""
        check_is_fitted(self, "search_")
        return self.search_.predict(self._rows(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of the chosen head."""
        check_is_fitted(self, "search_")
        return self.search_.predict_proba(self._rows(X))

    def _rows(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return join_parts([X[:, c] for c in self.columns_])
