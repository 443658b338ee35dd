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

__all__ = [
    "FROZEN", "FINETUNE", "STRATEGIES", "StrategyComparison", "compare_strategies", "parse_strategies",
    "run_finetune_strategy", "run_text_finetune_strategy", "strategy_section_html", "strategy_verdict", "write_strategy_outputs",
]

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
    notes : list of str
    finetune_label : str
        The fine-tuned curve's legend.
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    gain: pd.DataFrame
    verdict: str
    notes: list[str] = field(default_factory=list)
    finetune_label: str = "fine-tuned (LP-FT)"

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
                       notes: Sequence[str] = (), finetune_label: str = "fine-tuned (LP-FT)") -> StrategyComparison:
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
    return StrategyComparison(table, summary, gain, strategy_verdict(gain), list(notes), finetune_label)


def parse_strategies(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"frozen,finetune"`` -> ``("frozen", "finetune")``, checked against :data:`STRATEGIES`."""
    from deepfeat.exceptions import InvalidParameterError

    items = [s.strip() for s in (value.split(",") if isinstance(value, str) else value) if s.strip()]
    bad = [s for s in items if s not in STRATEGIES]
    if bad or not items:
        raise InvalidParameterError(f"strategies must be a comma-separated subset of {','.join(STRATEGIES)}; got {value!r}")
    if FROZEN not in items:
        raise InvalidParameterError(f"strategies must include {FROZEN!r} (the reference fine-tuning is compared with); got {value!r}")
    return tuple(dict.fromkeys(items))


def run_finetune_strategy(
    paths: Sequence[Any],
    labels: np.ndarray,
    draws: Sequence[Any],
    frozen_rows: pd.DataFrame,
    frozen_features: np.ndarray,
    *,
    backbone: str,
    layer: str | None,
    weights: str | None,
    cache: str | None,
    featurizer_options: dict[str, Any] | None = None,
    finetune_options: dict[str, Any] | None = None,
    work_dir: str | None = None,
    progress: bool = False,
) -> StrategyComparison:
    """Fine-tune on every draw of the main space and pair it with its frozen rows."""
    from deepfeat.featurize import Featurizer
    from deepfeat.finetune.compare import finetune_draws
    from deepfeat.finetune.recipe import Recipe

    opts = {k: v for k, v in (featurizer_options or {}).items() if k not in ("progress",)}
    f = Featurizer(backbone, layer=None if layer in (None, "penultimate") else layer, weights=weights,
                   cache=cache, **opts)
    recipe = Recipe(**(finetune_options or {}))
    rows, _ = finetune_draws(paths, labels, draws, frozen_features, f, recipe, work_dir=work_dir,
                             progress=progress)
    note = (f"fine-tuning: {recipe.epochs} epochs, lr {recipe.lr:g}, layer decay {recipe.layer_decay:g}, "
            f"first {recipe.freeze} block(s) frozen, on {f.runtime.describe()}; held-out images never "
            f"used for training or early stopping (the inner validation split is cut from each draw)")
    return compare_strategies(frozen_rows, rows, [note])


def run_text_finetune_strategy(
    texts: Sequence[str],
    labels: np.ndarray,
    draws: Sequence[Any],
    frozen_rows: pd.DataFrame,
    *,
    work_dir: str | None = None,
) -> StrategyComparison:
    """The contrastive text fine-tune (:mod:`deepfeat.text_finetune`) on every draw, paired
    with the frozen encoder's rows."""
    from deepfeat.text_finetune.compare import text_finetune_draws
    from deepfeat.text_finetune.estimator import ContrastiveTextClassifier

    rows = text_finetune_draws(texts, labels, draws, work_dir=work_dir)
    d = ContrastiveTextClassifier()
    note = (f"fine-tuning: contrastive pairs of the draw's labelled texts (the SetFit idea), {d.steps} steps, "
            f"lr {d.lr:g}, then a logistic regression on the tuned encoder; held-out texts never used "
            f"for training")
    return compare_strategies(frozen_rows, rows, [note], "fine-tuned (contrastive)")


def write_strategy_outputs(cmp: StrategyComparison, out: Any, frozen_label: str) -> dict[str, str]:
    """``strategies.csv``, ``strategy_gain.csv`` and the ``strategies.png`` learning curves."""
    from pathlib import Path

    from deepfeat.pipelines import plots

    out = Path(out)
    cmp.table.to_csv(out / "strategies.csv", index=False)
    cmp.gain.to_csv(out / "strategy_gain.csv", index=False)
    png = plots.plot_learning_curves(
        cmp.summary, {FROZEN: f"frozen features ({frozen_label})", FINETUNE: cmp.finetune_label},
        out / "strategies.png", title="Frozen features vs fine-tuning: held-out accuracy per k",
    )
    return {"strategies_csv": "strategies.csv", "strategy_gain_csv": "strategy_gain.csv",
            "strategies": Path(png).name}


def strategy_section_html(cmp: StrategyComparison, figure_html: str) -> str:
    """The report section: verdict, figure, table of accuracy, gain and training time per k."""
    import html

    rows = []
    for shots in cmp.summary.shots.unique():
        s = cmp.summary[cmp.summary.shots == shots].set_index("space")
        g = cmp.gain[cmp.gain.shots == shots]

        def acc(name: str, s: pd.DataFrame = s) -> str:
            if name not in s.index:
                return ""
            r = s.loc[name]
            ci = f" [{r.ci_low * 100:.1f}, {r.ci_high * 100:.1f}]" if np.isfinite(r.ci_low) else ""
            return f"{r['mean'] * 100:.1f}{ci}"

        gain = "" if g.empty else (f"{g.gain.iloc[0] * 100:+.1f}" + (
            f" [{g.ci_low.iloc[0] * 100:+.1f}, {g.ci_high.iloc[0] * 100:+.1f}]" if np.isfinite(g.ci_low.iloc[0]) else ""))
        secs = {n: s.loc[n].fit_seconds if n in s.index else float("nan") for n in STRATEGIES}
        rows.append(f"<tr><td>{html.escape(str(shots))}</td><td>{acc(FROZEN)}</td><td>{acc(FINETUNE)}</td>"
                    f"<td>{gain}</td><td>{secs[FROZEN]:.1f}</td><td>{secs[FINETUNE]:.1f}</td></tr>")
    table = ("<table><tr><th>k</th><th>frozen % [95% CI]</th><th>fine-tuned % [95% CI]</th>"
             "<th>paired gain (points) [95% CI]</th><th>frozen training s/draw</th>"
             "<th>fine-tuning s/draw</th></tr>" + "".join(rows) + "</table>")
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in cmp.notes)
    return ("<h2>Frozen features vs fine-tuning</h2>"
            f'<div class="box">{html.escape(cmp.verdict)}</div>{figure_html}{table}{notes}'
            "<p>Both strategies are scored on the same draws (same training and held-out images per k "
            "and repeat). Frozen training time is the head search on cached features; fine-tuning time "
            "includes the linear probe, decoding and training.</p>")
