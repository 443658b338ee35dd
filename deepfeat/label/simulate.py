"""Simulated labelling rounds: labels hidden until picked, paired draws, strategies compared.

:func:`simulate_acquisition` plays each strategy on a labelled pool whose labels it reveals
only for the picks, fits deepfeat's default head search on them (the fixed head when a
class has a single pick), with and without the rest of the pool as unlabelled items
(:func:`~deepfeat.label.semi.fit_with_unlabeled`), and scores a held-out set. Draw ``d``
seeds every strategy alike, so strategies are compared draw by draw
(:func:`paired_difference`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from deepfeat.classify.cv import class_counts
from deepfeat.classify.search import EmbeddingClassifier, fit_without_cv
from deepfeat.exceptions import InvalidParameterError
from deepfeat.label.selectors import STRATEGIES, FirstSelector, NextSelector, RandomSelector
from deepfeat.label.semi import fit_with_unlabeled
from deepfeat.process_state import ignoring_warnings

__all__ = ["acquisition_report", "labels_saved", "paired_difference", "pick", "simulate_acquisition"]

log = logging.getLogger(__name__)


def pick(strategy: str, X: np.ndarray, y: np.ndarray, budget: int, round_size: int, seed: int) -> np.ndarray:
    """Indices of ``budget`` pool items picked by ``strategy``; ``y`` is read only for the
    items already picked (``"next"`` plays rounds of ``round_size``, the first one cold)."""
    if strategy == "random":
        return RandomSelector(random_state=seed).fit(X).select(budget).indices
    if strategy == "first":
        return FirstSelector(random_state=seed).fit(X).select(budget).indices
    if strategy != "next":
        raise InvalidParameterError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    picked = list(FirstSelector(random_state=seed).fit(X).select(min(round_size, budget)).indices)
    while len(picked) < budget:
        rest = np.setdiff1d(np.arange(len(X)), picked)
        n = min(round_size, budget - len(picked))
        sel = NextSelector(random_state=seed).fit(X[rest], X_labeled=X[picked], y_labeled=y[picked])
        picked += rest[sel.select(n).indices].tolist()
    return np.asarray(picked, dtype=int)


def _fit(X: np.ndarray, y: np.ndarray, seed: int) -> EmbeddingClassifier | None:
    counts = class_counts(y)
    if len(counts) < 2:
        return None
    search = EmbeddingClassifier(random_state=seed)
    return fit_without_cv(search, X, y) if min(counts.values()) < 2 else search.fit(X, y)


def simulate_acquisition(
    X_pool: np.ndarray,
    y_pool: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    strategies: Sequence[str] = STRATEGIES,
    shots: Sequence[int] = (1, 2, 5, 10),
    draws: int = 10,
    unlabeled: bool = True,
    seed: int = 0,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Accuracy of the default fit on each strategy's picks, per draw and budget.

    The budget at ``k`` shots is ``k`` times the number of classes (the picks need not
    cover every class: the strategy does not see the labels). ``"next"`` plays rounds of
    one label per class.

    Returns
    -------
    pandas.DataFrame
        One row per (strategy, shots, draw, unlabeled): ``labels``, ``classes_covered``,
        ``accuracy`` and, with the pool, ``semi_used`` and ``semi_reason``.
    """
    n_classes = len(np.unique(y_pool))
    rows = []
    for k in shots:
        budget = int(k) * n_classes
        for d in range(draws):
            s = seed + d
            for strategy in strategies:
                idx = pick(strategy, X_pool, y_pool, budget, n_classes, s)
                model = _fit(X_pool[idx], y_pool[idx], s)
                if model is None:
                    acc = float(np.mean(y_test == y_pool[idx][0]))
                else:
                    acc = float(np.mean(model.predict(X_test) == y_test))
                base = {"strategy": strategy, "shots": int(k), "draw": d, "labels": int(len(idx)),
                        "classes_covered": int(len(np.unique(y_pool[idx])))}
                row = {**base, "unlabeled": False, "accuracy": acc}
                rows.append(row)
                if on_row:
                    on_row(row)
                if unlabeled:
                    semi_acc, used, reason = acc, None, "one class picked: no model"
                    if model is not None:
                        rest = np.setdiff1d(np.arange(len(X_pool)), idx)
                        choice = fit_with_unlabeled(model, X_pool[idx], y_pool[idx], X_pool[rest], random_state=s)
                        used, reason = choice["used"], choice["reason"]
                        semi_acc = float(np.mean(model.predict(X_test) == y_test))
                    row = {**base, "unlabeled": True, "accuracy": semi_acc, "semi_used": used, "semi_reason": reason}
                    rows.append(row)
                    if on_row:
                        on_row(row)
    return pd.DataFrame(rows)


def paired_difference(table: pd.DataFrame, a: dict[str, Any], b: dict[str, Any], *,
                      n_resamples: int = 5000, random_state: int = 0) -> pd.DataFrame:
    """Per shot value, mean accuracy of rows matching ``a`` minus those matching ``b``,
    paired by draw, with a 95 % paired-bootstrap interval.

    Examples
    --------
    >>> t = pd.DataFrame({"strategy": ["f"] * 3 + ["r"] * 3, "shots": [1] * 6, "draw": [0, 1, 2] * 2,
    ...                   "accuracy": [0.8, 0.9, 0.7, 0.6, 0.7, 0.6]})
    >>> d = paired_difference(t, {"strategy": "f"}, {"strategy": "r"})
    >>> round(float(d["diff"].iloc[0]), 3), bool(d.ci_low.iloc[0] > 0)
    (0.167, True)
    """
    def rows(spec: dict[str, Any]) -> pd.DataFrame:
        m = np.logical_and.reduce([table[c] == v for c, v in spec.items()])
        return table[m].set_index(["shots", "draw"])["accuracy"]

    both = pd.concat([rows(a).rename("a"), rows(b).rename("b")], axis=1, join="inner")
    rng = np.random.default_rng(random_state)
    out = []
    for k, grp in both.groupby(level="shots"):
        diff = (grp["a"] - grp["b"]).to_numpy()
        boots = diff[rng.integers(0, len(diff), (n_resamples, len(diff)))].mean(axis=1)
        lo, hi = np.quantile(boots, [0.025, 0.975]) if len(diff) > 1 else (np.nan, np.nan)
        out.append({"shots": int(k), "draws": len(diff), "a": float(grp["a"].mean()), "b": float(grp["b"].mean()),
                    "diff": float(diff.mean()), "ci_low": float(lo), "ci_high": float(hi)})
    return pd.DataFrame(out)


def labels_saved(table: pd.DataFrame, strategy: str, baseline: str = "random", *, unlabeled: bool = False,
                 n_resamples: int = 2000, random_state: int = 0) -> pd.DataFrame:
    """Labels per class ``baseline`` would need to match ``strategy``'s mean accuracy, less
    the ``strategy``'s own, per shot value, with a 95 % bootstrap interval over draws.

    The baseline's mean accuracy is interpolated linearly between its measured budgets;
    a strategy above the baseline's best measured accuracy saves "more than" the largest
    budget (``censored``); ``saved`` at or below 0 means nothing was saved.

    Examples
    --------
    >>> t = pd.DataFrame({"strategy": ["first"] * 4 + ["random"] * 4, "shots": [1, 1, 2, 2] * 2,
    ...                   "draw": [0, 1] * 4, "unlabeled": False,
    ...                   "accuracy": [0.6, 0.6, 0.8, 0.8, 0.4, 0.4, 0.8, 0.8]})
    >>> labels_saved(t, "first")[["shots", "saved"]].values.tolist()
    [[1.0, 0.5], [2.0, 0.0]]
    """
    t = table[table["unlabeled"] == unlabeled]
    A = t[t.strategy == strategy].pivot_table(index="draw", columns="shots", values="accuracy")
    B = t[t.strategy == baseline].pivot_table(index="draw", columns="shots", values="accuracy")
    draws = A.index.intersection(B.index)
    if not len(draws):
        raise InvalidParameterError(f"no draws shared by strategies {strategy!r} and {baseline!r}")
    A, B = A.loc[draws], B.loc[draws]
    ks = np.array(sorted(B.columns), dtype=float)

    def needed(acc: float, curve: np.ndarray) -> float:
        curve = np.maximum.accumulate(curve)  # a mean curve that dips is read as flat
        if acc <= curve[0]:
            return ks[0] * acc / curve[0] if curve[0] > 0 else ks[0]
        if acc > curve[-1]:
            return np.inf
        return float(np.interp(acc, curve, ks))

    rng = np.random.default_rng(random_state)
    out = []
    for k in sorted(A.columns):
        a, b = A[k].to_numpy(), B.to_numpy()
        est = needed(float(a.mean()), b.mean(axis=0)) - k
        boots = []
        for _ in range(n_resamples):
            i = rng.integers(0, len(draws), len(draws))
            boots.append(needed(float(a[i].mean()), b[i].mean(axis=0)) - k)
        boots = np.array(boots)
        with ignoring_warnings(RuntimeWarning):  # inf - inf where the strategy is above the curve
            lo, hi = np.quantile(boots, [0.025, 0.975]) if len(draws) > 1 else (np.nan, np.nan)
        out.append({"shots": float(k), "saved": float(est), "ci_low": float(lo), "ci_high": float(hi),
                    "censored": bool(np.isinf(est))})
    return pd.DataFrame(out)


def acquisition_report(table: pd.DataFrame, name: str) -> list[str]:
    """Markdown lines: each strategy vs random and with vs without the unlabelled pool
    (paired by draw, 95 % intervals), labels saved at equal accuracy, and how often the
    semi-supervised candidate was used."""
    lines = [f"## {name}", "", "| comparison | k | draws | mean A | mean B | A - B (points) | 95 % interval |",
             "|---|---|---|---|---|---|---|"]
    present = [s for s in STRATEGIES if s in set(table.strategy)]
    vs = [s for s in present if s != "random"] if "random" in present else []
    comps = [(f"{s} vs random", {"strategy": s, "unlabeled": False}, {"strategy": "random", "unlabeled": False})
             for s in vs]
    if table["unlabeled"].any():
        for s in present:
            comps.append((f"{s}: with vs without unlabelled", {"strategy": s, "unlabeled": True},
                          {"strategy": s, "unlabeled": False}))
    for title, a, b in comps:
        d = paired_difference(table, a, b)
        for r in d.itertuples(index=False):
            lines.append(f"| {title} | {r.shots} | {r.draws} | {100 * r.a:.1f} | {100 * r.b:.1f} | "
                         f"{100 * r.diff:+.1f} | {100 * r.ci_low:+.1f} to {100 * r.ci_high:+.1f} |")
    lines += ["", "| labels per class saved at equal accuracy (vs random) | k | saved | 95 % interval |",
              "|---|---|---|---|"]
    for s in vs:
        for r in labels_saved(table, s).itertuples(index=False):
            saved = f"above random's best (k={max(table.shots)}): not measurable" if r.censored else (
                f"{r.saved:+.2f}" if r.saved > 0 else f"nothing saved ({r.saved:+.2f})")
            lines.append(f"| {s} | {r.shots:g} | {saved} | {r.ci_low:+.2f} to {r.ci_high:+.2f} |")
    semi = table[table["unlabeled"]]
    if len(semi):
        used = semi.groupby("shots")["semi_used"].apply(lambda s: int(s.notna().sum()))
        lines += ["", "semi-supervised candidate used (draws x strategies): "
                  + ", ".join(f"k={k}: {n} of {int((semi.shots == k).sum())}" for k, n in used.items())]
    return lines
