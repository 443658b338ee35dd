"""Data audit before any experiment: duplicates, conflicting labels, leakage, balance, failures.

Two images are *exact duplicates* when their content hashes (the feature-cache keys) are
equal, and *near duplicates* when the cosine similarity of their embeddings exceeds a
stated threshold and -- when small pixel thumbnails are supplied -- the thumbnails also
correlate above a second stated threshold. The pixel check matters outside the
backbone's domain: an ImageNet CNN maps all 8×8 digits to nearly the same point, so
embedding similarity alone would call a "4" and a "7" duplicates. Re-encoded or resized
copies pass both checks; crops and flips of one photo may fail the pixel check. Each pair is classified as within one class (redundant), across classes
(conflicting labels: the same picture with two labels) and across the train/test split
(leakage: the test set contains an image the model may have trained on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from deepfeat.exceptions import InvalidParameterError

__all__ = [
    "NEAR_DUPLICATE_THRESHOLD",
    "PIXEL_CORRELATION_THRESHOLD",
    "DataAudit",
    "audit_dataset",
    "check_threshold",
    "near_duplicate_pairs",
    "pixel_correlation",
]

log = logging.getLogger(__name__)

#: Default cosine-similarity threshold above which two embeddings are near duplicates.
NEAR_DUPLICATE_THRESHOLD = 0.95
#: Default correlation of pixel thumbnails that near duplicates must also exceed.
PIXEL_CORRELATION_THRESHOLD = 0.95
_MAX_PAIRS = 200_000
_PAIR_COLUMNS = [
    "i",
    "j",
    "path_i",
    "path_j",
    "label_i",
    "label_j",
    "split_i",
    "split_j",
    "match",
    "similarity",
    "pixel_correlation",
    "conflicting_labels",
    "leak",
]


def near_duplicate_pairs(
    embeddings: np.ndarray, threshold: float, *, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(i, j, cosine)`` for all pairs ``i < j`` with cosine above ``threshold``.

    Rows with NaN (failed images) never match. Memory stays at ``chunk x n`` floats.

    Examples
    --------
    >>> e = np.array([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0]])
    >>> i, j, s = near_duplicate_pairs(e, 0.95)
    >>> i.tolist(), j.tolist()
    ([0], [1])
    """
    x = np.asarray(embeddings, dtype=np.float32)
    ok = np.isfinite(x).all(axis=1)
    norms = np.linalg.norm(np.where(ok[:, None], x, 0.0), axis=1)
    ok &= norms > 0
    unit = np.where(ok[:, None], x / np.maximum(norms, 1e-12)[:, None], 0.0)
    out_i, out_j, out_s = [], [], []
    total = 0
    for start in range(0, len(unit), chunk):
        sims = unit[start : start + chunk] @ unit.T
        rows, cols = np.nonzero(sims > threshold)
        rows = rows + start
        keep = (cols > rows) & ok[rows] & ok[cols]
        rows, cols = rows[keep], cols[keep]
        out_i.append(rows)
        out_j.append(cols)
        out_s.append(sims[rows - start, cols])
        total += rows.size
        if total > _MAX_PAIRS:
            log.warning(
                "more than %d near-duplicate pairs above cosine %.3f: the threshold is too low "
                "for these embeddings; pairs beyond the limit are not listed",
                _MAX_PAIRS,
                threshold,
            )
            break
    if not out_i:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0, float)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s).astype(float)


def _exact_pairs(keys: Sequence[str | None]) -> list[tuple[int, int]]:
    groups: dict[str, list[int]] = {}
    for idx, key in enumerate(keys):
        if key is not None:
            groups.setdefault(key, []).append(idx)
    return [
        (members[a], members[b])
        for members in groups.values()
        if len(members) > 1
        for a in range(len(members))
        for b in range(a + 1, len(members))
    ]


@dataclass
class DataAudit:
    """What the audit found.

    Attributes
    ----------
    pairs : pandas.DataFrame
        One row per duplicate pair: ``i, j, path_i, path_j, label_i, label_j, split_i,
        split_j, match`` ("exact" or "near"), ``similarity`` (embedding cosine),
        ``pixel_correlation`` (NaN when not checked), ``conflicting_labels``, ``leak``
        (the two sit on different sides of the train/test split).
    class_counts : pandas.DataFrame
        Images per class (rows) and split (columns, ``"all"`` without a split), failures
        excluded.
    failures : list of dict
        Images that could not be decoded (``index, path, reason``).
    skipped : list of dict
        Files that were not taken as images (``path, reason``).
    threshold : float
        Cosine threshold used for near duplicates.
    pixel_threshold : float or None
        Thumbnail correlation near duplicates had to exceed (``None``: not checked).
    similar_only : int
        Pairs above the embedding threshold whose thumbnails differ: not counted as
        duplicates (they look alike to the backbone only).
    dropped : int
        Images the caller dropped because of this audit (``--drop-leaked``); set by the
        caller, it changes the wording of :meth:`warnings`.
    """

    pairs: pd.DataFrame
    class_counts: pd.DataFrame
    failures: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    threshold: float = NEAR_DUPLICATE_THRESHOLD
    pixel_threshold: float | None = None
    similar_only: int = 0
    dropped: int = 0

    def counts(self) -> dict[str, int]:
        """Numbers of pairs by kind, failures and skipped files."""
        p = self.pairs
        within = ~p.conflicting_labels.astype(bool)
        return {
            "exact_within_class": int(((p.match == "exact") & within).sum()),
            "near_within_class": int(((p.match == "near") & within).sum()),
            "exact_conflicting_labels": int(((p.match == "exact") & ~within).sum()),
            "near_conflicting_labels": int(((p.match == "near") & ~within).sum()),
            "exact_leaks": int(((p.match == "exact") & p.leak).sum()),
            "near_leaks": int(((p.match == "near") & p.leak).sum()),
            "failed_decodes": len(self.failures),
            "skipped_files": len(self.skipped),
            "similar_in_embedding_only": self.similar_only,
        }

    def leaked_test(self) -> np.ndarray:
        """Indices of test images that duplicate (exactly or nearly) a training image."""
        p = self.pairs.loc[self.pairs.leak.astype(bool)]
        test = np.where(p.split_i == "test", p.i, p.j)
        return np.unique(test.astype(int))

    def redundant(self) -> np.ndarray:
        """Indices to drop so that no two members of a duplicate group remain.

        Duplicate groups are the connected components of the pair graph; the lowest index
        of each group is kept. Used to drop leaks when there is no fixed test set (each
        draw could put two copies on both sides).
        """
        parent: dict[int, int] = {}

        def find(a: int) -> int:
            while parent.setdefault(a, a) != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for a, b in zip(self.pairs.i.astype(int), self.pairs.j.astype(int), strict=True):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        return np.array(sorted(a for a in parent if find(a) != a), dtype=int)

    def warnings(self) -> list[str]:
        """Plain sentences about problems worth acting on."""
        c = self.counts()
        out = []
        if c["exact_leaks"] or c["near_leaks"]:
            pairs = (
                f"Leakage: {c['exact_leaks']} exact and {c['near_leaks']} near-duplicate pair(s) "
                f"straddle the train/test split"
            )
            if self.dropped:
                out.append(
                    f"{pairs}; the {self.dropped} leaked test image(s) were dropped before "
                    f"training and scoring (--drop-leaked)."
                )
            else:
                out.append(
                    f"{pairs}; held-out accuracy is optimistic unless they are dropped "
                    f"(--drop-leaked)."
                )
        if c["exact_conflicting_labels"] or c["near_conflicting_labels"]:
            out.append(
                f"Conflicting labels: {c['exact_conflicting_labels']} exact and "
                f"{c['near_conflicting_labels']} near-duplicate pair(s) carry different labels."
            )
        if c["exact_within_class"]:
            out.append(f"{c['exact_within_class']} exact duplicate pair(s) within a class.")
        if c["failed_decodes"]:
            out.append(f"{c['failed_decodes']} image(s) could not be decoded and are left out.")
        if c["skipped_files"]:
            out.append(
                f"{c['skipped_files']} file(s) in the source are not images and were skipped."
            )
        per_class = self.class_counts.sum(axis=1)
        if len(per_class) > 1 and per_class.min() > 0 and per_class.max() / per_class.min() >= 2:
            out.append(
                f"Class imbalance: {per_class.idxmax()!s} has {per_class.max()} images, "
                f"{per_class.idxmin()!s} only {per_class.min()} (balanced accuracy is reported too)."
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "threshold": self.threshold,
            "pixel_threshold": self.pixel_threshold,
            "counts": self.counts(),
            "warnings": self.warnings(),
            "class_counts": {
                str(k): {str(s): int(v) for s, v in row.items()}
                for k, row in self.class_counts.iterrows()
            },
        }


def check_threshold(threshold: float) -> float:
    """Validate a near-duplicate cosine threshold: a number in (0, 1].

    Examples
    --------
    >>> check_threshold(0.97)
    0.97
    """
    if not (isinstance(threshold, (int, float, np.floating)) and 0.0 < threshold <= 1.0):
        raise InvalidParameterError(f"threshold must be in (0, 1], got {threshold!r}")
    return threshold


def audit_dataset(
    paths: Sequence[str],
    labels: Sequence[str] | np.ndarray,
    keys: Sequence[str | None],
    embeddings: np.ndarray,
    *,
    split: Sequence[str] | np.ndarray | None = None,
    threshold: float = NEAR_DUPLICATE_THRESHOLD,
    failures: Sequence[dict[str, Any]] = (),
    skipped: Sequence[dict[str, Any]] = (),
    thumbnails: Callable[[np.ndarray], np.ndarray] | None = None,
    pixel_threshold: float = PIXEL_CORRELATION_THRESHOLD,
) -> DataAudit:
    """Find duplicates, conflicting labels, leakage and class imbalance in a labelled set.

    Parameters
    ----------
    paths : sequence of str
        Image paths (for the report).
    labels : array-like of shape (n,)
        Class labels.
    keys : sequence of str or None
        Content hashes (``FeaturizeResult.keys``); ``None`` for images that failed.
    embeddings : ndarray of shape (n, d)
        Embeddings for near-duplicate search; NaN rows (failed images) take no part in
        any pair or count.
    split : array-like of shape (n,), optional
        ``"train"`` or ``"test"`` per image; without it no pair counts as a leak.
    threshold : float
        Cosine similarity above which two images are near duplicates.
    failures, skipped : sequence of dict
        Decode failures and skipped files, passed through to the report.
    thumbnails : callable, optional
        ``thumbnails(indices) -> (len(indices), d)`` small pixel vectors of those images
        (NaN rows when undecodable). Called once, for the near-duplicate candidates only;
        a candidate is kept when its thumbnails correlate above ``pixel_threshold``.
    pixel_threshold : float
        See ``thumbnails``.

    Returns
    -------
    DataAudit

    Examples
    --------
    >>> emb = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.0, 1.0]])
    >>> a = audit_dataset(["a.png", "b.png", "c.png", "d.png"], ["x", "x", "y", "x"],
    ...                   ["k1", "k2", "k3", "k3"], emb, split=["train", "test", "train", "test"])
    >>> a.counts()["exact_conflicting_labels"], a.leaked_test().tolist()
    (1, [1, 3])
    """
    check_threshold(threshold)
    labels = np.asarray(labels).astype(str)
    n = len(labels)
    if not len(paths) == len(keys) == len(embeddings) == n:
        raise ValueError("paths, labels, keys and embeddings must have the same length")
    split_arr = (
        np.full(n, "all", dtype=object) if split is None else np.asarray(split, dtype=object)
    )
    ok = np.isfinite(np.asarray(embeddings, dtype=float)).all(axis=1)
    exact = _exact_pairs([k if good else None for k, good in zip(keys, ok, strict=True)])
    exact_set = set(exact)
    ni, nj, ns = near_duplicate_pairs(embeddings, threshold)
    fresh = np.array([(int(a), int(b)) not in exact_set for a, b in zip(ni, nj, strict=True)], bool)
    ni, nj, ns = ni[fresh], nj[fresh], ns[fresh]
    nc = np.full(len(ni), np.nan)
    similar_only = 0
    if thumbnails is not None and len(ni):
        nc = pixel_correlation(thumbnails, ni, nj)
        keep = nc > pixel_threshold
        similar_only = int((~keep).sum())
        ni, nj, ns, nc = ni[keep], nj[keep], ns[keep], nc[keep]
    rows = [(a, b, "exact", 1.0, np.nan) for a, b in exact]
    rows += [
        (int(a), int(b), "near", float(s), float(c))
        for a, b, s, c in zip(ni, nj, ns, nc, strict=True)
    ]
    records = [
        {
            "i": a,
            "j": b,
            "path_i": str(paths[a]),
            "path_j": str(paths[b]),
            "label_i": labels[a],
            "label_j": labels[b],
            "split_i": split_arr[a],
            "split_j": split_arr[b],
            "match": m,
            "similarity": s,
            "pixel_correlation": c,
            "conflicting_labels": bool(labels[a] != labels[b]),
            "leak": bool(split is not None and split_arr[a] != split_arr[b]),
        }
        for a, b, m, s, c in rows
    ]
    pairs = pd.DataFrame(records, columns=_PAIR_COLUMNS).astype(
        {
            "i": int,
            "j": int,
            "similarity": float,
            "pixel_correlation": float,
            "conflicting_labels": bool,
            "leak": bool,
        }
    )
    pairs = pairs.sort_values(
        ["leak", "conflicting_labels", "match", "similarity"],
        ascending=[False, False, True, False],
        ignore_index=True,
    )
    counts = pd.crosstab(
        pd.Series(labels[ok], name="class"), pd.Series(split_arr[ok], name="split")
    )
    return DataAudit(
        pairs=pairs,
        class_counts=counts,
        failures=list(failures),
        skipped=list(skipped),
        threshold=float(threshold),
        pixel_threshold=None if thumbnails is None else float(pixel_threshold),
        similar_only=similar_only,
    )


def pixel_correlation(
    thumbnails: Callable[[np.ndarray], np.ndarray], i: np.ndarray, j: np.ndarray
) -> np.ndarray:
    """Pearson correlation of the thumbnails of pairs ``(i[k], j[k])`` (NaN if undecodable).

    Examples
    --------
    >>> t = np.array([[0.0, 1, 2, 3], [0, 2, 4, 6], [3, 2, 1, 0]])
    >>> pixel_correlation(lambda idx: t[idx], np.array([0, 0]), np.array([1, 2])).round(3).tolist()
    [1.0, -1.0]
    """
    uniq, inverse = np.unique(np.concatenate([i, j]), return_inverse=True)
    t = np.asarray(thumbnails(uniq), dtype=float)
    t = t - t.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(t, axis=1, keepdims=True)
    t = np.divide(t, norm, out=np.full_like(t, np.nan), where=norm > 1e-9)
    a, b = t[inverse[: len(i)]], t[inverse[len(i) :]]
    return (a * b).sum(axis=1)
