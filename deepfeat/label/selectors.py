"""Selectors: which unlabelled items to label first, and which next.

Both work on embedding matrices (rows = items) and follow scikit-learn's conventions:
``__init__`` stores the settings, ``fit`` validates and learns, :meth:`select` returns the
ranked :class:`~deepfeat.label.picks.Picks` with a reason per pick.

* :class:`FirstSelector` (cold start, no labels needed): typical and diverse
  representatives as in TypiClust (Hacohen et al., 2022): k-means into as many groups as
  there are picks (plus the items already labelled) on L2-normalised embeddings; from each
  group without a labelled item, largest first, the most *typical* item (highest inverse
  mean distance to its nearest neighbours in the group).
* :class:`NextSelector` (a model, or labelled items beside the pool): margin uncertainty
  balanced with diversity: the ``candidates x n`` least certain items are grouped into
  ``n`` clusters and each cluster gives its most typical member (not an outlier);
  :meth:`NextSelector.check` ranks the labelled items whose label looks wrong.
* :class:`RandomSelector`: uniform picks, the baseline every strategy is compared with.

Exact duplicates are never picked twice, nor near duplicates (cosine at or above
``duplicate_threshold``, the audit's threshold by default) while other items remain.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from deepfeat.exceptions import InputError, InvalidParameterError
from deepfeat.label.geometry import (
    DuplicateGuard,
    check_embeddings,
    cluster,
    compact,
    typicality,
    unit_rows,
)
from deepfeat.label.picks import Picks
from deepfeat.pipelines.audit import NEAR_DUPLICATE_THRESHOLD, check_threshold

__all__ = ["FirstSelector", "NextSelector", "RandomSelector", "STRATEGIES"]

log = logging.getLogger(__name__)

#: Strategy names of the CLI and the experiments.
STRATEGIES = ("random", "first", "next")


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InvalidParameterError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_n(n: Any, available: int) -> int:
    n = _check_int("n", n, 1)
    if n > available:
        raise InvalidParameterError(f"n={n} is more than the {available} item(s) there are to pick from")
    return n


class _Base(BaseEstimator):
    def _check_common(self) -> None:
        _check_int("n_neighbors", self.n_neighbors, 1)
        check_threshold(self.duplicate_threshold)

    def _fit_pool(self, X: Any) -> np.ndarray:
        X = check_embeddings(X)
        self.n_features_in_ = X.shape[1]
        self.unit_ = unit_rows(X)
        self.compact_ = compact(self.unit_, self.random_state)
        return X

    def _labeled_units(self, X_labeled: Any) -> np.ndarray:
        if X_labeled is None:
            return np.zeros((0, self.n_features_in_), dtype=np.float32)
        L = check_embeddings(X_labeled, "X_labeled")
        if L.shape[1] != self.n_features_in_:
            raise InputError(
                f"X_labeled has {L.shape[1]} features but the pool has {self.n_features_in_}: "
                f"embed both in the same space"
            )
        return unit_rows(L)

    def _pick_in_order(
        self, groups: list[np.ndarray], guard: DuplicateGuard, n: int
    ) -> list[tuple[int, int, int]]:
        """Round robin over ``groups`` (each an index array, best first): up to ``n``
        ``(item, group, round)`` picks skipping duplicates; near duplicates only when
        nothing else is left."""
        picks: list[tuple[int, int, int]] = []
        for exact_only in (False, True):
            pos = [0] * len(groups)
            rnd = 0
            while len(picks) < n and any(p < len(g) for p, g in zip(pos, groups)):
                for gi, g in enumerate(groups):
                    while pos[gi] < len(g):
                        i = int(g[pos[gi]])
                        pos[gi] += 1
                        if i in guard.taken or guard.blocked(i, exact_only=exact_only):
                            continue
                        guard.take(i)
                        picks.append((i, gi, rnd))
                        break
                    if len(picks) >= n:
                        break
                rnd += 1
            if len(picks) >= n:
                break
        if len(picks) < n:
            log.warning("only %d distinct item(s) to pick from (%d wanted): the rest are exact duplicates",
                        len(picks), n)
        return picks


class FirstSelector(_Base):
    """Typical, diverse items to label first (TypiClust-style cold start).

    Parameters
    ----------
    n_neighbors : int, default=20
        Neighbours the typicality of an item is measured over (within its group).
    duplicate_threshold : float, default=0.95
        Cosine at or above which two items count as near duplicates
        (:data:`~deepfeat.pipelines.audit.NEAR_DUPLICATE_THRESHOLD`).
    random_state : int or None, default=0
        Seeds the projection and k-means.

    Attributes
    ----------
    unit_ : ndarray of shape (n_samples, n_features)
        The L2-normalised embeddings.
    compact_ : ndarray of shape (n_samples, <= 64)
        Their projection on the leading principal axes (clustering and neighbours).
    labeled_unit_ : ndarray
        The L2-normalised embeddings of the items already labelled (may be empty).
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> picks = FirstSelector().fit(X).select(10)
    >>> len(picks), len(set(picks.indices.tolist()))
    (10, 10)
    >>> len(set(y[picks.indices].tolist())) >= 7  # typical and diverse: most digits covered
    True
    """

    def __init__(
        self,
        *,
        n_neighbors: int = 20,
        duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD,
        random_state: int | None = 0,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.duplicate_threshold = duplicate_threshold
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None, *, X_labeled: Any = None) -> FirstSelector:
        """Learn the geometry of the pool ``X`` (and of the labelled items, if any).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings of the unlabelled pool.
        y : None
            Ignored (selection needs no labels).
        X_labeled : array-like of shape (n_labeled, n_features), optional
            Embeddings of items already labelled: their groups count as covered and their
            duplicates are never picked.
        """
        self._check_common()
        self._fit_pool(X)
        self.labeled_unit_ = self._labeled_units(X_labeled)
        return self

    def select(self, n: int) -> Picks:
        """The ``n`` items to label first, ranked, with a reason each."""
        check_is_fitted(self, "unit_")
        n = _check_n(n, len(self.unit_))
        n_lab = len(self.labeled_unit_)
        k = min(len(self.unit_), n + n_lab)
        labels = cluster(self.compact_, k, self.random_state)
        covered = set()
        if n_lab:
            # a labelled item covers the group whose members it is most like
            cent = np.stack([self.unit_[labels == c].mean(axis=0) for c in range(k)])
            covered = set(np.argmax(self.labeled_unit_ @ cent.T, axis=1).tolist())
        sizes = np.bincount(labels, minlength=k)
        order = sorted(range(k), key=lambda c: (c in covered, -sizes[c], c))
        groups, typ = [], {}
        for c in order:
            members = np.flatnonzero(labels == c)
            t = typicality(self.compact_[members], self.n_neighbors)
            rank = np.argsort(-t, kind="stable")
            groups.append(members[rank])
            typ.update(zip(members.tolist(), t.tolist()))
        guard = DuplicateGuard(self.unit_, self.duplicate_threshold)
        if n_lab:
            guard.avoid(self.labeled_unit_)
        picks = self._pick_in_order(groups, guard, n)
        reasons = []
        for i, gi, rnd in picks:
            c = order[gi]
            state = "already has a labelled item" if c in covered else "no labelled item yet"
            what = "most typical" if rnd == 0 else f"typical (pick {rnd + 1} of this group)"
            reasons.append(
                f"{what} item of group {gi + 1}/{k} ({sizes[c]} items, {state}; typicality {typ[i]:.3g})"
            )
        return Picks(np.array([p[0] for p in picks], dtype=int), reasons,
                     np.array([typ[p[0]] for p in picks], dtype=float))


class NextSelector(_Base):
    """Items to label next: uncertain ones, spread out, plus labels to check.

    Parameters
    ----------
    candidates : int, default=10
        The ``candidates * n`` least certain items (smallest margin between the two most
        probable classes) are grouped into ``n`` clusters; each gives one pick.
    estimator : classifier or None, default=None
        Head fitted on the labelled items to get probabilities (when :meth:`fit` is not
        given ``proba``); ``None``: deepfeat's fixed default head
        (:func:`~deepfeat.pipelines.heads.fixed_head`), the one fitted when a class has a
        single example.
    n_neighbors, duplicate_threshold, random_state
        As in :class:`FirstSelector`.

    Attributes
    ----------
    margin_ : ndarray of shape (n_samples,)
        Probability of the most probable class minus that of the second, per pool item.
    proba_ : ndarray of shape (n_samples, n_classes)
    classes_ : ndarray
    typicality_ : ndarray of shape (n_samples,)
        Typicality of each pool item among its nearest pool neighbours.
    unit_, compact_, labeled_unit_, n_features_in_
        As in :class:`FirstSelector`.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> lab = np.arange(0, 1797, 60)  # 30 labelled digits
    >>> pool = np.setdiff1d(np.arange(1797), lab)
    >>> sel = NextSelector().fit(X[pool], X_labeled=X[lab], y_labeled=y[lab])
    >>> picks = sel.select(20)
    >>> bool(np.median(sel.margin_[picks.indices]) < np.median(sel.margin_))  # uncertain ones
    True
    """

    def __init__(
        self,
        *,
        candidates: int = 10,
        estimator: Any = None,
        n_neighbors: int = 20,
        duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD,
        random_state: int | None = 0,
    ) -> None:
        self.candidates = candidates
        self.estimator = estimator
        self.n_neighbors = n_neighbors
        self.duplicate_threshold = duplicate_threshold
        self.random_state = random_state

    def _head(self) -> Any:
        if self.estimator is not None:
            return clone(self.estimator)
        from deepfeat.pipelines.heads import fixed_head

        return fixed_head(0 if self.random_state is None else int(self.random_state))

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        X_labeled: Any = None,
        y_labeled: Any = None,
        proba: Any = None,
        classes: Any = None,
    ) -> NextSelector:
        """Score the pool ``X`` by the uncertainty of a model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings of the unlabelled pool.
        y : None
            Ignored.
        X_labeled, y_labeled : array-like, optional
            Labelled items (embeddings and labels): a head is fitted on them unless
            ``proba`` is given, their duplicates are never picked, and :meth:`check` ranks
            the ones whose label looks wrong.
        proba : array-like of shape (n_samples, n_classes), optional
            Class probabilities of the pool items from a model (``--model``).
        classes : array-like, optional
            Names of the columns of ``proba``.
        """
        self._check_common()
        _check_int("candidates", self.candidates, 1)
        self._fit_pool(X)
        self.labeled_unit_ = self._labeled_units(X_labeled)
        self.y_labeled_ = None if y_labeled is None else np.asarray(y_labeled)
        if self.y_labeled_ is not None and len(self.y_labeled_) != len(self.labeled_unit_):
            raise InputError(
                f"X_labeled holds {len(self.labeled_unit_)} items but y_labeled {len(self.y_labeled_)} labels"
            )
        if proba is not None:
            P = np.asarray(proba, dtype=float)
            if P.ndim != 2 or len(P) != len(self.unit_):
                raise InputError(f"proba must have one row per pool item ({len(self.unit_)}), got shape {P.shape}")
            self.classes_ = np.arange(P.shape[1]) if classes is None else np.asarray(classes)
        else:
            if self.y_labeled_ is None:
                raise InputError("NextSelector needs labelled items (X_labeled, y_labeled) or a model's proba")
            self.classes_ = np.unique(self.y_labeled_)
            if len(self.classes_) < 2:
                P = np.ones((len(self.unit_), 1))  # one class known: no margin, typicality decides
            else:
                # one BLAS thread, as classify's refits: small fits lose most to thread contention
                with threadpool_limits(limits=1, user_api="blas"):
                    head = self._head().fit(np.asarray(X_labeled, dtype=np.float64), self.y_labeled_)
                    P = head.predict_proba(np.asarray(X, dtype=np.float64))
                self.classes_ = np.asarray(getattr(head, "classes_", self.classes_))
        srt = np.sort(P, axis=1)
        self.proba_ = P
        self.margin_ = srt[:, -1] - srt[:, -2] if P.shape[1] > 1 else np.zeros(len(P))
        self.typicality_ = typicality(self.compact_, self.n_neighbors)
        return self

    def select(self, n: int) -> Picks:
        """The ``n`` pool items to label next, ranked, with a reason each."""
        check_is_fitted(self, "margin_")
        n = _check_n(n, len(self.unit_))
        guard = DuplicateGuard(self.unit_, self.duplicate_threshold)
        if len(self.labeled_unit_):
            guard.avoid(self.labeled_unit_)
        m = min(len(self.unit_), self.candidates * n)
        # least certain first; ties (one known class) go to the most typical
        order = np.lexsort((-self.typicality_, self.margin_))
        cand = order[:m]
        labels = cluster(self.compact_[cand], n, self.random_state)
        k = int(labels.max()) + 1
        groups = []
        for c in range(k):
            members = cand[labels == c]
            groups.append(members[np.argsort(-self.typicality_[members], kind="stable")])
        # the group holding the least certain items first
        groups.sort(key=lambda g: float(self.margin_[g].min()))
        picks = self._pick_in_order(groups, guard, n)
        if len(picks) < n:  # the candidates ran out (duplicates): the next least certain
            rest = [np.array([i for i in order[m:]], dtype=int)]
            picks += [(i, len(groups), r) for i, _, r in self._pick_in_order(rest, guard, n - len(picks))]
        reasons = [self._reason(i, len(groups[g]) if g < len(groups) else 1) for i, g, _ in picks]
        return Picks(np.array([p[0] for p in picks], dtype=int), reasons,
                     np.array([self.margin_[p[0]] for p in picks], dtype=float))

    def _reason(self, i: int, group_size: int) -> str:
        P = self.proba_[i]
        if P.shape[0] < 2:
            return f"typical of a group of {group_size} (only one class labelled so far: no uncertainty yet)"
        a, b = np.argsort(-P)[:2]
        return (
            f"uncertain between {self.classes_[a]!s} ({P[a]:.2f}) and {self.classes_[b]!s} ({P[b]:.2f}), "
            f"margin {self.margin_[i]:.2f}; most typical of a group of {group_size} uncertain items"
        )

    def check(self, n: int | None = None) -> Picks:
        """Labelled items whose label looks wrong, most doubtful first (``kind="check"``).

        Two signs, each named in the reason: the out-of-fold prediction of the head (fitted
        without the item) disagrees with its label, and a near duplicate carries another
        label (:func:`~deepfeat.pipelines.audit.near_duplicate_pairs`). ``n``: at most so many.
        """
        check_is_fitted(self, "margin_")
        from deepfeat.label.suspects import suspect_labels

        if self.y_labeled_ is None or not len(self.labeled_unit_):
            return Picks(np.zeros(0, dtype=int), [], np.zeros(0), kind="check")
        return suspect_labels(self.labeled_unit_, self.y_labeled_, self._head(),
                              threshold=self.duplicate_threshold, n=n,
                              random_state=self.random_state)


class RandomSelector(BaseEstimator):
    """Uniform picks (the baseline).

    Examples
    --------
    >>> RandomSelector(random_state=0).fit(np.zeros((5, 2))).select(3).indices.tolist()
    [2, 4, 3]
    """

    def __init__(self, *, random_state: int | None = 0) -> None:
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> RandomSelector:
        """Remember the pool size."""
        self.n_samples_ = len(check_embeddings(X))
        return self

    def select(self, n: int) -> Picks:
        """``n`` distinct items drawn uniformly."""
        check_is_fitted(self, "n_samples_")
        n = _check_n(n, self.n_samples_)
        idx = np.random.default_rng(self.random_state).permutation(self.n_samples_)[:n]
        return Picks(idx, ["drawn at random"] * n, np.zeros(n))
