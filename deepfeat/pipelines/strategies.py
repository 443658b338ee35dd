"""Frozen features vs fine-tuning on the same draws: paired gains, intervals, times, a verdict.

The frozen strategy's rows are the main space's rows of the learning curve; the fine-tuned
rows come from :func:`deepfeat.finetune.compare.finetune_draws` on the very same draws, so
each pair of rows shares its training images and its held-out images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from deepfeat.pipelines.summary import paired_gain, summarize

__all__ = ["FROZEN", "FINETUNE", "STRATEGIES", "StrategyComparison", "compare_strategies", "strategy_verdict"]

FROZEN = "frozen"
FINETUNE = "finetune"
STRATEGIES = (FROZEN, FINETUNE)


@dataclass
class StrategyComparison:
    """Frozen vs fine-tuned, per k.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per (strategy, draw): ``space`` (the strategy), ``shots, k, repeat,
        accuracy, balanced_accuracy, fit_seconds`` (training time of that draw).
    summary : pandas.DataFrame
        Mean accuracy and 95% t-interval per strategy and k, with ``fit_seconds`` (mean).
    gain : pandas.DataFrame
        Paired gain of fine-tuning over frozen features per k (``gain, ci_low, ci_high``).
    verdict : str
        One plain sentence.
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    gain: pd.DataFrame
    verdict: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary.to_dict(orient="records"),
            "gain": self.gain.to_dict(orient="records"),
            "verdict": self.verdict,
        }


def strategy_verdict(gain: pd.DataFrame) -> str:
    """"fine-tuning beats frozen features from k = … on", or "no gain at any k measured".

    Fine-tuning *beats* frozen features at a k when the paired 95% interval of the gain
    lies wholly above zero; the verdict names the smallest k from which that holds at
    every larger k measured with an interval.

    Examples
    --------
    >>> g = pd.DataFrame({"shots": ["5", "10", "20"], "k": [5.0, 10.0, 20.0], "pairs": [3] * 3,
    ...                   "gain": [0.0, 0.05, 0.08], "ci_low": [-0.04, 0.01, 0.03],
    ...                   "ci_high": [0.04, 0.09, 0.12]})
    >>> strategy_verdict(g).split(" (")[0]
    'fine-tuning beats frozen features from k = 10 on'
    >>> strategy_verdict(g.assign(ci_low=-0.1)).split(":")[0]
    'no gain at any k measured'
    """
    g = gain[np.isfinite(gain.ci_low)].sort_values("k")
    if g.empty:
        return "no gain at any k measured (no k had several paired draws, so no interval)"
    above = (g.ci_low > 0).to_numpy()
    start = None
    for i in range(len(g) - 1, -1, -1):
        if not above[i]:
            break
        start = i
    worse = g.shots[g.ci_high < 0].tolist()
    tail = f"; frozen features are better at k = {', '.join(map(str, worse))}" if worse else ""
    if start is not None:
        row = g.iloc[start]
        return (f"fine-tuning beats frozen features from k = {row.shots} on "
                f"(+{row.gain * 100:.1f} accuracy points there, 95% CI {row.ci_low * 100:+.1f} to "
                f"{row.ci_high * 100:+.1f}, {int(row.pairs)} paired draws){tail}")
    best = g.iloc[int(np.argmax(g.gain.to_numpy()))]
    return (f"no gain at any k measured: fine-tuning vs frozen features is within the noise of the draws "
            f"or below (best: {best.gain * 100:+.1f} points at k = {best.shots}, 95% CI "
            f"{best.ci_low * 100:+.1f} to {best.ci_high * 100:+.1f}){tail}")


def compare_strategies(frozen_rows: pd.DataFrame, finetune_rows: Sequence[dict[str, Any]] | pd.DataFrame,
                       notes: Sequence[str] = ()) -> StrategyComparison:
    """Pair the frozen and fine-tuned rows by (k, repeat) and summarise them."""
    cols = ["space", "shots", "k", "repeat", "seed", "n_train", "n_test", "accuracy", "balanced_accuracy",
            "fit_seconds"]
    frozen = frozen_rows.assign(space=FROZEN)
    ft = pd.DataFrame(list(finetune_rows) if not isinstance(finetune_rows, pd.DataFrame) else finetune_rows)
    ft = ft.assign(space=FINETUNE)
    extra = [c for c in ft.columns if c not in cols]
    table = pd.concat([frozen[[c for c in cols if c in frozen]], ft[cols + extra]], ignore_index=True)
    summary = summarize(table)
    secs = table.groupby(["space", "shots"], sort=False).fit_seconds.mean().rename("fit_seconds").reset_index()
    summary = summary.merge(secs, on=["space", "shots"], how="left")
    gain = paired_gain(table, FINETUNE, FROZEN)
    return StrategyComparison(table, summary, gain, strategy_verdict(gain), list(notes))
