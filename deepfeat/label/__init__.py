"""Fewer labels: which items to label first and next, and learning from unlabelled ones.

Selectors (:class:`FirstSelector`, :class:`NextSelector`, :class:`RandomSelector`) work on
embedding matrices with ``fit(X)`` / ``select(n)`` and return ranked
:class:`Picks` with a reason per pick. The package sits beside :mod:`deepfeat.pipelines`:
it uses classify's heads and the audit's duplicate search, and only the CLI imports it.
"""

from deepfeat.label.picks import Picks
from deepfeat.label.selectors import STRATEGIES, FirstSelector, NextSelector, RandomSelector
from deepfeat.label.suspects import suspect_labels

__all__ = ["STRATEGIES", "FirstSelector", "NextSelector", "Picks", "RandomSelector", "suspect_labels"]
