""":class:`Picks`: the ranked items a selector chose, each with the reason it was chosen."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Picks"]


@dataclass(frozen=True)
class Picks:
    """Items to label (or to check), best first.

    Attributes
    ----------
    indices : numpy.ndarray of int
        Row indices into the matrix the selector was fitted on, in rank order.
    reasons : list of str
        One line per pick saying why it was chosen.
    scores : numpy.ndarray of float
        The number the ranking rests on (typicality, margin...; see ``reasons``).
    kind : str
        ``"label"`` (items to label) or ``"check"`` (labelled items whose label looks wrong).

    Examples
    --------
    >>> p = Picks(np.array([3, 1]), ["typical", "diverse"], np.array([2.0, 1.0]))
    >>> p.to_frame(["a", "b", "c", "d"])[["path", "rank"]].values.tolist()
    [['d', 1], ['b', 2]]
    """

    indices: np.ndarray
    reasons: list[str]
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    kind: str = "label"

    def __len__(self) -> int:
        return len(self.indices)

    def to_frame(self, paths: Sequence[Any] | None = None, *, start: int = 1) -> Any:
        """The picks as a table: ``path`` (when ``paths`` given), ``index``, ``rank``,
        ``action`` and ``reason``."""
        import pandas as pd

        idx = np.asarray(self.indices, dtype=int)
        cols: dict[str, Any] = {}
        if paths is not None:
            cols["path"] = [str(paths[i]) for i in idx]
        cols["index"] = idx
        cols["rank"] = np.arange(start, start + len(idx))
        cols["action"] = self.kind
        cols["reason"] = list(self.reasons)
        return pd.DataFrame(cols)
