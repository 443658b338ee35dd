"""The embedding geometry selectors share: unit rows, a compact space, typicality, duplicates."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from deepfeat.exceptions import InputError
from deepfeat.process_state import ignoring_warnings

__all__ = ["DuplicateGuard", "check_embeddings", "cluster", "compact", "typicality", "unit_rows"]

#: Dimensions kept for clustering and neighbours (cosine geometry barely changes, 10x faster).
COMPACT_DIM = 64


def check_embeddings(X: object, name: str = "X") -> np.ndarray:
    """``X`` as a finite 2-d float32 array, or one clear error naming ``name``.

    Examples
    --------
    >>> check_embeddings([[1, 2], [3, 4]]).dtype
    dtype('float32')
    """
    a = np.asarray(X, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty 2-d array of embeddings, got shape {a.shape}")
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise InputError(
            f"{name} has {int(bad.sum())} row(s) with NaN or infinite values (e.g. row "
            f"{int(np.flatnonzero(bad)[0])}: an unreadable item); leave them out first"
        )
    return a


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


def compact(U: np.ndarray, random_state: int | None) -> np.ndarray:
    """Unit rows projected on their first :data:`COMPACT_DIM` principal axes (when wider)."""
    if U.shape[1] <= COMPACT_DIM or U.shape[0] <= COMPACT_DIM:
        return U.astype(np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        pca = PCA(COMPACT_DIM, svd_solver="randomized", random_state=random_state)
        return pca.fit_transform(U).astype(np.float32)


def cluster(Z: np.ndarray, n_clusters: int, random_state: int | None) -> np.ndarray:
    """K-means labels of the rows of ``Z`` (one k-means++ start)."""
    n_clusters = max(1, min(int(n_clusters), len(Z)))
    if n_clusters == 1:
        return np.zeros(len(Z), dtype=int)
    km = KMeans(n_clusters=n_clusters, n_init=1, random_state=random_state)
    # one thread: k-means on at most 64 dimensions is memory-bound, and OpenMP threads
    # fighting over busy cores made it 5x slower (10,000 rows, 50 clusters)
    with (
        threadpool_limits(limits=1),
        ignoring_warnings(ConvergenceWarning),  # fewer distinct points than clusters
    ):
        return km.fit_predict(Z)


def typicality(Z: np.ndarray, n_neighbors: int = 20) -> np.ndarray:
    """Inverse mean Euclidean distance of each row to its ``n_neighbors`` nearest others.

    TypiClust's measure of how typical (dense around) a point is; a lone row gets 0.

    Examples
    --------
    >>> t = typicality(np.array([[0.0], [0.1], [0.2], [5.0]]), 2)
    >>> int(np.argmax(t)), int(np.argmin(t))
    (1, 3)
    """
    n = len(Z)
    if n < 2:
        return np.zeros(n)
    k = min(n_neighbors, n - 1)
    if n > 3000:
        dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors(Z)
        mean = dist[:, 1:].mean(axis=1)
    else:  # small groups: one matrix product beats building a neighbour index
        Z = np.asarray(Z, dtype=np.float64)
        sq = np.einsum("ij,ij->i", Z, Z)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (Z @ Z.T), 0.0)
        np.fill_diagonal(d2, np.inf)
        mean = np.sqrt(np.partition(d2, k - 1, axis=1)[:, :k]).mean(axis=1)
    return 1.0 / np.maximum(mean, 1e-12)


class DuplicateGuard:
    """Refuses an item whose cosine with one already taken reaches ``threshold``.

    Exact duplicates (cosine 1) are always refused; near ones with a cosine at or above
    ``threshold``. Pairs are checked directly against what was taken (no chaining of
    similar items into one large group).

    Examples
    --------
    >>> U = unit_rows(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    >>> g = DuplicateGuard(U, 0.95)
    >>> g.take(0); g.blocked(1), g.blocked(2)
    (True, False)
    """

    def __init__(self, U: np.ndarray, threshold: float) -> None:
        self.U = U
        self.threshold = float(threshold)
        self.taken: list[int] = []
        self._extra = np.zeros((0, U.shape[1]), dtype=U.dtype)

    def avoid(self, V: np.ndarray) -> None:
        """Also refuse duplicates of the unit rows ``V`` (e.g. items already labelled)."""
        self._extra = np.vstack([self._extra, V.astype(self.U.dtype)])

    def similarity(self, i: int) -> float:
        """Highest cosine of item ``i`` with anything taken or avoided (-1 when none)."""
        ref = np.vstack([self.U[self.taken], self._extra]) if self.taken else self._extra
        return float((ref @ self.U[i]).max()) if len(ref) else -1.0

    def blocked(self, i: int, *, exact_only: bool = False) -> bool:
        """Whether item ``i`` duplicates something taken (``exact_only``: exactly)."""
        limit = 1.0 - 1e-6 if exact_only else min(self.threshold, 1.0 - 1e-6)
        return self.similarity(i) >= limit

    def take(self, i: int) -> None:
        self.taken.append(int(i))
