"""Means and confidence intervals over repeats, and paired gains between feature spaces.

Intervals are Student-t intervals over the R repeats of a point (``mean ± t(R-1) · s/√R``):
they describe how much the accuracy moves with *which* images were labelled. With a fixed
test set they do not include the test set's own sampling error. With one repeat there is
no interval (NaN). Gains between two spaces are *paired*: both were scored on the same
draws, so the interval is taken over the per-draw differences, which is much tighter than
comparing two separate intervals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "CI_METHOD",
    "t_interval",
    "summarize",
    "paired_gain",
    "gains_frame",
    "gains_to_dict",
    "reference_shots",
    "transfer_verdict",
    "NO_VERDICT",
]

#: How a verdict starts when no shot value has an interval (a single draw each).
NO_VERDICT = "one draw: no interval, no verdict"

CI_METHOD = (
    "95% Student-t interval over repeats (random training draws), clipped to the metric's range"
)


def t_interval(
    values: np.ndarray, confidence: float = 0.95, bounds: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    """Return ``(mean, low, high)`` of a t-interval; low/high are NaN with fewer than 2 values.

    ``bounds`` clips the interval to the range the quantity can take (an accuracy cannot
    exceed 100%, even when two draws and a t-quantile of 12.7 say otherwise).

    Examples
    --------
    >>> m, lo, hi = t_interval(np.array([0.5, 0.7]))
    >>> round(m, 2), bool(lo < m < hi)
    (0.6, True)
    """
    values = np.asarray(values, dtype=float)
    mean = float(values.mean()) if values.size else float("nan")
    if values.size < 2:
        return mean, float("nan"), float("nan")
    sem = float(values.std(ddof=1)) / np.sqrt(values.size)
    half = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1)) * sem
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return mean, lo, hi


def summarize(
    table: pd.DataFrame, metric: str = "accuracy", confidence: float = 0.95
) -> pd.DataFrame:
    """Aggregate the per-draw table into one row per (space, shots).

    ``metric`` must lie in [0, 1] (accuracy, balanced accuracy): intervals are clipped to it.

    Returns
    -------
    pandas.DataFrame
        Columns ``space, shots, k, repeats, mean, std, ci_low, ci_high`` in the order
        spaces and shots first appear in ``table``.
    """
    rows = []
    for (space, shots), grp in table.groupby(["space", "shots"], sort=False):
        mean, lo, hi = t_interval(grp[metric].to_numpy(), confidence, bounds=(0.0, 1.0))
        rows.append(
            {
                "space": space,
                "shots": shots,
                "k": float(grp["k"].mean()),
                "repeats": len(grp),
                "mean": mean,
                "std": float(grp[metric].std(ddof=1)) if len(grp) > 1 else float("nan"),
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return pd.DataFrame(rows)


def paired_gain(
    table: pd.DataFrame,
    space: str,
    baseline: str,
    metric: str = "accuracy",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per shot value, the mean of ``metric(space) - metric(baseline)`` over shared draws.

    Returns
    -------
    pandas.DataFrame
        Columns ``shots, k, pairs, gain, ci_low, ci_high``.

    Examples
    --------
    >>> t = pd.DataFrame({"space": ["a", "a", "b", "b"], "shots": ["1"] * 4, "k": [1.0] * 4,
    ...                   "repeat": [0, 1, 0, 1], "accuracy": [0.8, 0.9, 0.5, 0.7]})
    >>> round(float(paired_gain(t, "a", "b").gain.iloc[0]), 2)
    0.25
    """
    a = table[table.space == space].set_index(["shots", "repeat"])
    b = table[table.space == baseline].set_index(["shots", "repeat"])
    both = a.join(b[[metric]].rename(columns={metric: f"{metric}_base"}), how="inner")
    rows = []
    for shots, grp in both.groupby(level="shots", sort=False):
        diff = (grp[metric] - grp[f"{metric}_base"]).to_numpy()
        gain, lo, hi = t_interval(diff, confidence, bounds=(-1.0, 1.0))
        rows.append(
            {
                "shots": shots,
                "k": float(grp["k"].mean()),
                "pairs": len(diff),
                "gain": gain,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return pd.DataFrame(rows)


def gains_frame(gains: dict[str, pd.DataFrame], space: str) -> pd.DataFrame:
    """All paired gains of ``space`` in one table (``gains.csv``): a ``baseline`` column added."""
    return pd.concat(
        [g.assign(space=space, baseline=b) for b, g in gains.items()], ignore_index=True
    )


def gains_to_dict(gains: dict[str, pd.DataFrame]) -> dict[str, dict[str, dict]]:
    """Paired gains as JSON-able values: ``{baseline: {shots: {k, draws, mean, ci_low, ci_high}}}``.

    The numbers are those of :func:`gains_frame` (``gains.csv``); an interval that does not
    exist (a single draw) is ``None``.

    Examples
    --------
    >>> t = pd.DataFrame({"space": ["a", "a", "b", "b"], "shots": ["1"] * 4, "k": [1.0] * 4,
    ...                   "repeat": [0, 1, 0, 1], "accuracy": [0.8, 0.9, 0.5, 0.7]})
    >>> d = gains_to_dict({"b": paired_gain(t, "a", "b")})
    >>> d["b"]["1"]["draws"], round(d["b"]["1"]["mean"], 2)
    (2, 0.25)
    """

    def num(v: float) -> float | None:
        return float(v) if np.isfinite(v) else None

    return {
        baseline: {
            str(r.shots): {
                "k": float(r.k),
                "draws": int(r.pairs),
                "mean": num(r.gain),
                "ci_low": num(r.ci_low),
                "ci_high": num(r.ci_high),
            }
            for r in g.itertuples(index=False)
        }
        for baseline, g in gains.items()
    }


def reference_shots(summary: pd.DataFrame) -> str:
    """The shot value headlines are judged at: the largest k measured on several draws.

    ``k=all`` is a single draw with no interval, so it is the reference only when no
    other shot value has repeats.

    Examples
    --------
    >>> s = pd.DataFrame({"shots": ["5", "20", "all"], "k": [5.0, 20.0, 50.0],
    ...                   "repeats": [3, 3, 1]})
    >>> reference_shots(s)
    '20'
    """
    repeated = summary[summary.repeats >= 2]
    pool = repeated if len(repeated) else summary
    return str(pool.sort_values("k", kind="stable").shots.iloc[-1])


def transfer_verdict(gain: pd.DataFrame, main_label: str, baseline_label: str) -> str:
    """One plain sentence: does the main space beat the baseline?

    Judged at the largest k that has an interval (several paired draws; ``k=all`` is a
    single draw), or at the largest k when none has one; the k values where the paired
    interval lies wholly above or below zero are listed too. Negative transfer is said
    first and in capitals, so nobody misses it. A verdict needs an interval: when every
    shot value has a single paired draw, the sentence starts with :data:`NO_VERDICT`, gives
    the difference and judges nothing.

    Examples
    --------
    >>> g = pd.DataFrame({"shots": ["5"], "k": [5.0], "pairs": [3], "gain": [-0.1],
    ...                   "ci_low": [-0.15], "ci_high": [-0.05]})
    >>> transfer_verdict(g, "cnn", "pixels")[:70]
    'NEGATIVE TRANSFER: cnn is worse than the pixels at k=5 (3 paired draws'
    >>> g2 = pd.DataFrame({"shots": ["5", "20"], "k": [5.0, 20.0], "pairs": [3, 3],
    ...                    "gain": [0.1, 0.05], "ci_low": [0.04, -0.03], "ci_high": [0.16, 0.15]})
    >>> print(transfer_verdict(g2, "cnn", "pixels"))  # doctest: +NORMALIZE_WHITESPACE
    NO CLEAR GAIN: cnn vs the pixels at k=20 (3 paired draws): +5.0 accuracy points (95% CI -3.0
    to +15.0); the difference is within the noise of the draws; clearly ahead at k=5 (interval
    above zero).
    >>> g1 = pd.DataFrame({"shots": ["5"], "k": [5.0], "pairs": [1], "gain": [-0.1],
    ...                    "ci_low": [np.nan], "ci_high": [np.nan]})
    >>> print(transfer_verdict(g1, "cnn", "pixels"))  # doctest: +NORMALIZE_WHITESPACE
    one draw: no interval, no verdict. cnn vs the pixels at k=5 (1 paired draw): -10.0 accuracy
    points; repeat the draws (repeats of 2 or more) to judge the difference.
    """
    ordered = gain.sort_values("k")
    with_ci = ordered[np.isfinite(ordered.ci_low)]
    last = (with_ci if len(with_ci) else ordered).iloc[-1]
    g, lo, hi = last.gain * 100, last.ci_low * 100, last.ci_high * 100
    at = f"at k={last.shots} ({int(last.pairs)} paired draw{'s' if last.pairs != 1 else ''})"
    if not len(with_ci):
        return (
            f"{NO_VERDICT}. {main_label} vs the {baseline_label} {at}: {g:+.1f} accuracy points; "
            f"repeat the draws (repeats of 2 or more) to judge the difference."
        )
    ci = f" (95% CI {lo:+.1f} to {hi:+.1f})" if np.isfinite(lo) else " (single draw: no interval)"
    ahead = ordered.shots[ordered.ci_low > 0].tolist()
    behind = ordered.shots[ordered.ci_high < 0].tolist()
    over = "".join(
        f"; {word} at k={', '.join(map(str, ks))} (interval {side} zero)"
        for word, ks, side in (
            ("clearly ahead", ahead, "above"),
            ("clearly behind", behind, "below"),
        )
        if ks
    )
    if hi < 0:
        return (
            f"NEGATIVE TRANSFER: {main_label} is worse than the {baseline_label} {at}: "
            f"{g:+.1f} accuracy points{ci}{over}. Its pretrained features do not help on this data."
        )
    if np.isfinite(lo) and lo > 0:
        return (
            f"{main_label} beats the {baseline_label} {at} by {g:+.1f} accuracy points{ci}{over}."
        )
    return (
        f"NO CLEAR GAIN: {main_label} vs the {baseline_label} {at}: {g:+.1f} accuracy points{ci}; "
        f"the difference is within the noise of the draws{over}."
    )
