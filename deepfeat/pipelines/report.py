"""Write an experiment's tables, figures and one self-contained HTML report.

The HTML embeds its figures as base64 PNGs (it can be mailed or opened anywhere on its own)
and links the PNG and CSV files written beside it. The data audit comes first: results
mean little before one knows whether the test set leaks. Headline numbers are read at the
*reference* k -- the largest k measured on several draws -- so every headline number has
an interval.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from deepfeat.pipelines import plots, strategies
from deepfeat.pipelines.experiment_result import versions
from deepfeat.pipelines.experiment_spaces import AUTO, LAYER, TRANSFER
from deepfeat.pipelines.extrapolate import BOOTSTRAP_METHOD
from deepfeat.pipelines.heads import FIXED_HEAD_DESCRIPTION
from deepfeat.pipelines.summary import CI_METHOD, NO_VERDICT, gains_frame

if TYPE_CHECKING:
    from deepfeat.pipelines.experiment_result import ExperimentResult

__all__ = ["write_tables", "write_figures", "render_html", "write_outputs"]

log = logging.getLogger(__name__)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.meta{color:#666;font-size:.9em}
.box{border-radius:6px;padding:.6em 1em;margin:.6em 0}
.good{background:#e8f5e9;border-left:5px solid #2e7d32} .bad{background:#fdecea;border-left:5px solid #c62828}
.neutral{background:#fff8e1;border-left:5px solid #f9a825} .info{background:#f3f6fa;border-left:5px solid #5c7fa3}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right} td{white-space:nowrap} th{background:#f5f5f5}
td.l,th.l{text-align:left;white-space:normal} td.w{white-space:normal;text-align:left;min-width:16em}
img{max-width:100%;border:1px solid #eee} figure{margin:1em 0} figcaption{font-size:.85em;color:#555}
code{background:#f3f3f3;padding:0 3px;border-radius:3px} small{color:#666}
"""
_GALLERY_SIZE = 12


# ----------------------------------------------------------------------------- helpers
def _e(x: Any) -> str:
    return html.escape(str(x))


def _pct(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def _acc_cell(mean: float, lo: float, hi: float) -> str:
    if not np.isfinite(lo):
        return f"{100 * mean:.1f} (1 draw)"
    return f"{100 * mean:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _verdict_class(text: str) -> str:
    if text.startswith("NEGATIVE"):
        return "bad"
    if text.startswith(("NO CLEAR", NO_VERDICT)):
        return "neutral"
    return "good"


def _labels(result: ExperimentResult) -> dict[str, str]:
    return {s.name: s.label for s in result.spaces}


def _table(df: pd.DataFrame, left: int = 1, wrap: tuple[str, ...] = ()) -> str:
    """An HTML table: the first ``left`` columns left-aligned, ``wrap`` columns as prose."""
    cls = ["l" if i < left else "w" if c in wrap else "" for i, c in enumerate(df.columns)]
    head = "".join(f'<th class="{k}">{_e(c)}</th>' for k, c in zip(cls, df.columns, strict=True))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{k}">{_e(v)}</td>' for k, v in zip(cls, row, strict=True))
        + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(result: ExperimentResult, key: str, caption: str) -> str:
    name = result.files.get(key)
    if not name:
        return ""
    data = base64.b64encode((result.out / name).read_bytes()).decode()
    return (
        f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
        f'<figcaption>{caption} <a href="{_e(name)}">{_e(name)}</a></figcaption></figure>'
    )


# ----------------------------------------------------------------------------- tables
def write_tables(result: ExperimentResult) -> dict[str, str]:
    """Write the tidy tables; return ``{name: file name}`` relative to ``result.out``."""
    out, files = result.out, {}
    result.table.to_csv(out / "results.csv", index=False)
    files["results_csv"] = "results.csv"
    try:
        import pyarrow  # noqa: F401

        result.table.to_parquet(out / "results.parquet", index=False)
        files["results_parquet"] = "results.parquet"
    except ImportError:
        log.info("pyarrow not installed: no results.parquet (pip install deepfeat[parquet])")
    result.summary.to_csv(out / "summary.csv", index=False)
    files["summary_csv"] = "summary.csv"
    if result.gains:
        gains_frame(result.gains, result.main.name).to_csv(out / "gains.csv", index=False)
        files["gains_csv"] = "gains.csv"
    result.audit.pairs.to_csv(out / "audit_pairs.csv", index=False)
    files["audit_csv"] = "audit_pairs.csv"
    if result.strategies is not None:
        files.update(strategies.write_strategy_outputs(result.strategies, out, result.main.label))
    return files


# ----------------------------------------------------------------------------- figures
def _misclassified_items(result: ExperimentResult) -> tuple[list[dict[str, Any]], int, int]:
    """Most confidently misclassified held-out images of the best space (each image once)."""
    best = result.best
    y_true = result.labels[best["test"]]
    wrong = np.flatnonzero(best["y_pred"] != y_true)
    conf = np.nan_to_num(best["confidence"], nan=0.0)
    items, seen = [], set()
    for i in wrong[np.argsort(-conf[wrong], kind="stable")]:
        idx = int(best["test"][i])
        if idx in seen:
            continue
        seen.add(idx)
        p = best["confidence"][i]
        items.append(
            {
                "path": result.paths[idx],
                "color": "red",
                "caption": f"true {y_true[i]}\npredicted {best['y_pred'][i]}"
                + (f" ({p:.0%})" if np.isfinite(p) else ""),
            }
        )
        if len(items) == _GALLERY_SIZE:
            break
    return items, len(wrong), len(y_true)


def write_figures(result: ExperimentResult) -> dict[str, str]:
    """Draw the report's PNGs; return ``{name: file name}``."""
    out, files = result.out, {}
    labels = _labels(result)
    # the fit drawn is the one the "how many labels" answer uses, unless it was refused
    ex = result.extrapolations.get(result.labels_space)
    files["learning_curves"] = Path(
        plots.plot_learning_curves(
            result.summary,
            {s.name: s.label for s in result.spaces if s.role != LAYER},
            out / "learning_curves.png",
            baselines=[s.name for s in result.spaces if s.is_baseline],
            extrapolation=(result.labels_space, ex) if ex and not ex.refused else None,
            title="Held-out accuracy vs labelled images per class",
        )
    ).name
    layer_spaces = [s for s in result.spaces if s.role == LAYER]
    if layer_spaces:
        order = {s.name: s.layer for s in layer_spaces} | {result.main.name: "penultimate"}
        files["layer_sweep"] = Path(
            plots.plot_layer_sweep(
                result.summary,
                order,
                out / "layer_sweep.png",
                title=f"Layer sweep of {result.main.backbone} (bars: 95% CI over draws)",
            )
        ).name
    best = result.best
    draws = f"{best['n_draws']} draw{'s' if best['n_draws'] != 1 else ''}"
    files["confusion"] = Path(
        plots.plot_confusion(
            result.labels[best["test"]],
            best["y_pred"],
            sorted(set(result.labels)),
            out / "confusion.png",
            title=f"{labels[best['space']]}, k={best['shots']}, held-out predictions of {draws}",
        )
    ).name
    items, n_wrong, n_total = _misclassified_items(result)
    if items and not _is_text(result):  # texts are listed as text in the HTML instead
        files["misclassified"] = Path(
            plots.plot_gallery(
                items,
                out / "misclassified.png",
                title=f"Most confidently misclassified held-out images "
                f"({n_wrong} of {n_total} predictions wrong over {draws})",
            )
        ).name
    conf = np.asarray(best["confidence"], dtype=float)
    if len(conf) and np.isfinite(conf).all():
        correct = np.asarray(best["y_pred"]).astype(str) == result.labels[best["test"]].astype(str)
        cal = _pooled_calibration(conf, correct)
        files["reliability"] = Path(
            plots.plot_reliability(
                {f"{labels[best['space']]} (ECE {cal['ece']:.3f})": cal["reliability"]},
                out / "reliability.png",
                title=f"Reliability, k={best['shots']}, held-out predictions of {draws}",
            )
        ).name
    if len(result.audit.pairs) and not _is_text(result):
        files["duplicates"] = Path(
            plots.plot_pairs(
                result.audit.pairs,
                out / "duplicates.png",
                title="Duplicate pairs (leaks and conflicting labels first)",
            )
        ).name
    return files


def _is_text(result: ExperimentResult) -> bool:
    return result.config.get("modality") == "text"


def _text_pairs(result: ExperimentResult, limit: int = 30) -> str:
    """The audit's pairs of texts, as a table of the texts themselves."""
    pairs = result.audit.pairs.head(limit)
    rows = pd.DataFrame({
        "text": [result.paths[i] for i in pairs["i"]],
        "label": [result.labels[i] for i in pairs["i"]],
        "other text": [result.paths[j] for j in pairs["j"]],
        "other label": [result.labels[j] for j in pairs["j"]],
        "kind": pairs["match"], "cosine": pairs["similarity"].round(3),
        "conflicting labels": pairs["conflicting_labels"], "leak": pairs["leak"],
    })
    return "<p>Duplicate and near-duplicate texts (leaks and conflicting labels first):</p>" + _table(
        rows, left=4, wrap=("text", "other text"))


def _misclassified_texts(result: ExperimentResult) -> str:
    items, n_wrong, n_total = _misclassified_items(result)
    if not items:
        return ""
    rows = pd.DataFrame({
        "text": [it["path"] for it in items],
        "true / predicted": [it["caption"].replace("\n", " / ") for it in items],
    })
    return (f"<p>Most confidently misclassified held-out texts ({n_wrong} of {n_total} predictions "
            f"wrong):</p>" + _table(rows, left=2, wrap=("text",)))


def _pooled_calibration(confidence: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """ECE and reliability bins of pooled top-label probabilities."""
    from deepfeat.classify.metrics import expected_calibration_error, reliability_bins

    return {
        "ece": expected_calibration_error(confidence, correct),
        "reliability": reliability_bins(confidence, correct),
    }


def _calibration_section(result: ExperimentResult) -> str:
    best = result.best
    t = result.table
    rows = t[(t["space"] == best["space"]) & (t["shots"] == str(best["shots"]))]
    if "reliability" not in result.files or "log_loss" not in t or rows["log_loss"].isna().all():
        return ""
    label = _labels(result)[best["space"]]
    return "\n".join(
        [
            "<h2>Probabilities</h2>",
            f"<p>{_e(label)} at k={_e(best['shots'])}: held-out log-loss "
            f"{rows['log_loss'].mean():.3f}, expected calibration error (top label, 10 bins) "
            f"{rows['ece'].mean():.3f}, means over {len(rows)} draw(s). The head's probabilities "
            "are temperature-scaled out of fold within each training draw.</p>",
            _img(
                result,
                "reliability",
                "Accuracy per bin of the predicted class's probability (all draws pooled); on the "
                "dotted diagonal a probability of 0.8 is right 80 % of the time.",
            ),
        ]
    )


# ----------------------------------------------------------------------------- sections
def _headline(result: ExperimentResult) -> str:
    main, labels, s = result.main, _labels(result), result.summary
    ref = result.best["shots"]
    at = s[s.shots == ref].set_index("space")
    m = at.loc[main.name]
    ci = (
        f" (95% CI {_pct(m.ci_low)}–{_pct(m.ci_high)} over {int(m.repeats)} draws)"
        if np.isfinite(m.ci_low)
        else " (a single draw: no interval)"
    )
    others = "; ".join(
        f"{_e(labels[sp.name])}: {_pct(at.loc[sp.name, 'mean'])}"
        for sp in result.spaces
        if (sp.is_baseline or sp.role == AUTO) and sp.name in at.index
    )
    out = [
        f"<p><b>Headline.</b> With <b>k={_e(ref)}</b> labelled images per class, "
        f"<b>{_e(main.label)}</b> reaches <b>{_pct(m['mean'])}</b> held-out accuracy{ci}"
        + (f"; {others}" if others else "")
        + ".</p>"
    ]
    if "all" in set(s.shots) and ref != "all":
        every = s[s.shots == "all"]
        k_all = float(every.k.iloc[0])
        out.append(
            f"<p>With all training images (about {k_all:.0f} per class; one draw, no interval): "
            + "; ".join(
                f"{_e(labels[r.space])} {_pct(r['mean'])}"
                for _, r in every.iterrows()
                if r.role != LAYER
            )
            + ".</p>"
        )
    out += [f'<div class="box {_verdict_class(v)}">{_e(v)}</div>' for v in result.verdicts]
    ex = result.extrapolations.get(result.labels_space)
    if ex:
        refused = f" The fit is refused: {_e(ex.refused)}." if ex.refused else ""
        out.append(
            f'<div class="box info"><b>How many labels?</b> Power-law extrapolation of '
            f"{_e(labels[result.labels_space])} (rough; details below):{refused} "
            + " ".join(_e(t.describe()) for t in ex.targets)
            + "</div>"
        )
    warns = result.audit.warnings()
    if warns:
        out.append(
            '<div class="box bad"><b>Data audit:</b> '
            + " ".join(_e(w) for w in warns)
            + " Details below.</div>"
        )
    return "\n".join(out)


def _audit_section(result: ExperimentResult) -> str:
    a = result.audit
    c = a.counts()
    thumb = result.config.get("audit_thumbnail", "?")
    rows = pd.DataFrame(
        [
            (
                "exact duplicates (identical file content)",
                c["exact_within_class"],
                c["exact_conflicting_labels"],
                c["exact_leaks"],
            ),
            (
                f"near duplicates (embedding cosine > {a.threshold:g})",
                c["near_within_class"],
                c["near_conflicting_labels"],
                c["near_leaks"],
            ),
        ],
        columns=[
            "pairs",
            "within one class",
            "across classes (conflicting labels)",
            "across train/test (leaks)",
        ],
    )
    parts = [
        "<h2>Data audit</h2>",
        f"<p>Checked before training: {result.data['images']} images in {result.data['classes']} "
        f"classes, {result.data['usable']} usable. Exact duplicates: identical file content (hash). "
        f"Near duplicates: cosine similarity of {_e(result.main.label)} embeddings above "
        f"<b>{a.threshold:g}</b>"
        + (
            f" <i>and</i> correlation of {thumb}×{thumb} pixel thumbnails above "
            f"<b>{a.pixel_threshold:g}</b> (re-encoded or resized copies pass both; crops and flips "
            f"may not). {c['similar_in_embedding_only']} more pair(s) were close in the embedding "
            "but differ in pixels: not counted"
            if a.pixel_threshold is not None
            else ""
        )
        + ". Check the thumbnails below before acting on them.</p>",
        _table(rows),
        f"<p>Failed decodes: <b>{c['failed_decodes']}</b>; non-image files skipped: "
        f"<b>{c['skipped_files']}</b>.</p>",
    ]
    if "test" not in set(result.split):
        parts.append(
            "<p><small>No fixed test set, so no pair is a leak by itself; but two copies in one "
            "class can land on both sides of a draw. --drop-leaked keeps one image of each "
            "duplicate group.</small></p>"
        )
    warns = a.warnings()
    parts += [f'<div class="box bad">{_e(w)}</div>' for w in warns]
    if not warns:
        parts.append(
            '<div class="box good">No duplicates across classes or the split, no failed '
            "decodes, no stray files.</div>"
        )
    if a.failures:
        parts.append(
            "<p>Failed decodes:</p>"
            + _table(pd.DataFrame(a.failures)[["path", "reason"]].head(50), left=2)
        )
    if a.skipped:
        parts.append(
            "<p>Skipped files:</p>"
            + _table(pd.DataFrame(a.skipped)[["path", "reason"]].head(50), left=2)
        )
    counts = a.class_counts.copy()
    counts["total"] = counts.sum(axis=1)
    parts.append(
        "<details><summary>Class balance (usable images per class)</summary>"
        + _table(counts.reset_index())
        + "</details>"
    )
    if _is_text(result) and len(a.pairs):
        parts.append(_text_pairs(result))
    parts.append(
        _img(result, "duplicates", "Each panel is one pair; red: a leak or conflicting labels.")
    )
    if len(a.pairs):
        parts.append(
            f'<p>All {len(a.pairs)} pairs: <a href="{result.files["audit_csv"]}">'
            "audit_pairs.csv</a>.</p>"
        )
    return "\n".join(parts)


def _protocol_section(result: ExperimentResult) -> str:
    d, cfg = result.data, result.config
    test = "" if d["test"] is None else f", test set {d['test']} images"
    seeds = f"{cfg['seed']}…{cfg['seed'] + cfg['repeats'] - 1}"
    size = cfg["pixel_size"]
    items = [
        f"Evaluation: <b>{_e(d['protocol'])}</b>; training pool {d['train_pool']} images{test}.",
        f"Learning curve: k ∈ {{{_e(', '.join(cfg['shots']))}}} labelled images per class, "
        f"{cfg['repeats']} random draws per k (seeds {seeds}). Draws are nested: the k=1 images are "
        "among the k=2 images of the same seed. k=all is a single draw (the whole pool). Every "
        "feature space is scored on the same draws, so differences between them are paired.",
        f"Head: {_e(cfg['head'])}. Hyperparameters are chosen by cross-validation <i>inside each "
        "training draw</i> (nested: held-out images are never used for tuning). When a class has a "
        f"single training image, CV is impossible: {_e(FIXED_HEAD_DESCRIPTION)}.",
        f"Intervals: {_e(CI_METHOD)}. With a fixed test set they leave out the test set's own "
        f"sampling error. Extrapolation: {_e(BOOTSTRAP_METHOD)}.",
        f"Baselines, measured the same way: raw pixels (each image resized to {size}×{size} RGB) "
        "with the same head, and the first backbone with random weights (seeded).",
    ]
    notes = "".join(f"<li>{_e(n)}</li>" for n in result.notes)
    return (
        "<h2>Protocol</h2><ul>"
        + "".join(f"<li>{i}</li>" for i in items)
        + "</ul>"
        + (f"<p>Adjustments and skips:</p><ul>{notes}</ul>" if notes else "")
    )


def _summary_table(result: ExperimentResult, roles: set[str]) -> str:
    s = result.summary[result.summary.role.isin(roles)]
    labels = _labels(result)
    cells = s.assign(
        cell=[
            _acc_cell(m, lo, hi) for m, lo, hi in zip(s["mean"], s.ci_low, s.ci_high, strict=True)
        ],
        label=[f"{labels[n]} ({r})" for n, r in zip(s.space, s.role, strict=True)],
    )
    wide = cells.pivot(index="label", columns="shots", values="cell")
    shots = list(dict.fromkeys(s.sort_values("k", kind="stable").shots))
    wide = wide.reindex(index=list(dict.fromkeys(cells.label)), columns=shots).fillna("")
    wide.columns = [f"k={c}" for c in wide.columns]
    return _table(wide.reset_index().rename(columns={"label": "feature space (role)"}))


def _gain_section(result: ExperimentResult) -> str:
    if not result.gains:
        return ""
    labels = _labels(result)
    parts = [
        "<h2>Transfer gain over the baselines</h2>",
        f"<p>{_e(result.main.label)} minus each baseline, in accuracy points, draw by draw on the "
        "same draws; 95% t-interval over the paired differences.</p>",
    ]
    for b, g in result.gains.items():
        t = pd.DataFrame(
            {
                "k": g.shots,
                "paired draws": g.pairs,
                "gain (points)": [f"{100 * v:+.1f}" for v in g.gain],
                "95% CI": [
                    f"[{100 * lo:+.1f}, {100 * hi:+.1f}]" if np.isfinite(lo) else "1 draw"
                    for lo, hi in zip(g.ci_low, g.ci_high, strict=True)
                ],
            }
        )
        parts.append(f"<p><b>vs {_e(labels[b])}</b></p>" + _table(t))
    parts += [f'<div class="box {_verdict_class(v)}">{_e(v)}</div>' for v in result.verdicts]
    return "\n".join(parts)


def _extrapolation_section(result: ExperimentResult) -> str:
    parts = ["<h2>How many labels would reach a target? (extrapolation)</h2>"]
    labels = _labels(result)
    failed = [
        f"<p>Not fitted for {_e(labels.get(name, name))}: {_e(why)}. The measured accuracies "
        f"above are unaffected.</p>"
        for name, why in result.extrapolation_failures.items()
    ]
    if not result.extrapolations:
        if failed:
            return "\n".join(parts + failed)
        return parts[0] + "<p>Not fitted: at least three distinct k values are needed.</p>"
    parts += failed
    parts.append(
        "<p>A fit of err(k) = a·k<sup>−b</sup> + c to every draw; c is the error the fit predicts "
        "with unlimited labels, so 1−c is its ceiling. Extrapolating a handful of noisy points is "
        "rough: read the ranges, not the point estimates. A fit that contradicts the measured "
        "points (a measured mean above its ceiling, or outside its bootstrap band, by more than "
        "that mean's own noise) is refused and gives no count. "
        "The ranges reflect draw-to-draw noise "
        "only, not whether a power law is the right shape, so they are if anything too narrow. "
        "Baselines are left out here (their fits are in experiment.json). A ceiling of "
        "'none seen' means the fit put c at its bound 0: the curve shows no plateau yet, so "
        "every target looks reachable only because the power law is extended. "
        f"Uncertainty: {_e(BOOTSTRAP_METHOD)}.</p>"
    )
    rows = []
    baselines = {sp.name for sp in result.spaces if sp.is_baseline}
    for name, ex in result.extrapolations.items():
        if name in baselines:
            continue  # their curves are far below the targets: counts of no use
        if ex.refused:  # no count from a fit that contradicts the measured points
            rows.append(
                {
                    "feature space": labels[name],
                    "fitted ceiling": ex.law.ceiling_text(),
                    "target": ", ".join(f"{t.target:.0%}" for t in ex.targets),
                    "labels per class": "refused",
                    "bootstrap range": "–",
                    "refits never reaching it": "–",
                    "status": f"fit refused: {ex.refused}",
                }
            )
            continue
        for t in ex.targets:
            rows.append(
                {
                    "feature space": labels[name],
                    "fitted ceiling": ex.law.ceiling_text(),
                    "target": f"{t.target:.0%}",
                    "labels per class": "refused" if t.refused else t.format_labels(t.labels),
                    "bootstrap range": "–"
                    if t.refused or not np.isfinite(t.low)
                    else f"{t.format_labels(t.low)} – {t.format_labels(t.high)}",
                    "refits never reaching it": "–" if t.refused else f"{t.p_unreachable:.0%}",
                    "status": (f"refused: {t.refused}" if t.refused else t.status)
                    + (
                        f"; measured {t.measured_accuracy:.1%} at k={t.measured_k:g}"
                        if np.isfinite(t.measured_k)
                        else ""
                    ),
                }
            )
    parts.append(_table(pd.DataFrame(rows), wrap=("status",)))
    parts += [
        f"<p><small>{_e(n)}</small></p>"
        for n in {e.note for e in result.extrapolations.values() if e.note}
    ]
    return "\n".join(parts)


def _errors_section(result: ExperimentResult) -> str:
    best = result.best
    label = _labels(result)[best["space"]]
    parts = [
        "<h2>Errors of the best configuration</h2>",
        f"<p>Best by mean held-out accuracy at k={_e(best['shots'])}: <b>{_e(label)}</b> (choosing "
        "the best on held-out results flatters it a little; the headline uses the main space, "
        f"fixed in advance). Predictions of its {best['n_draws']} draw(s) at that k are pooled.</p>",
        _img(
            result,
            "confusion",
            "Confusion matrix, rows normalised to the true class; counts in cells.",
        ),
    ]
    if _is_text(result) and _misclassified_items(result)[0]:
        parts.append(_misclassified_texts(result))
    elif "misclassified" in result.files:
        parts.append(
            _img(
                result,
                "misclassified",
                "Most confidently misclassified held-out images (probability of the wrong class).",
            )
        )
    else:
        parts.append('<div class="box good">No held-out image was misclassified.</div>')
    return "\n".join(parts)


def _cache_section(result: ExperimentResult) -> str:
    rows = []
    for name, s in result.featurization.items():
        ips = s.get("images_per_second")
        rows.append(
            {
                "feature space": name,
                "images": s.get("total", ""),
                "from cache": s.get("cached", ""),
                "computed (forward passes)": s.get("featurized", ""),
                "duplicates reused": s.get("deduplicated", "–"),
                "failed": s.get("failed", ""),
                "seconds": f"{s.get('seconds', 0):.1f}",
                "images/s": f"{ips:.1f}" if ips else "–",
            }
        )
    return (
        "<h2>Featurization and cache</h2>"
        f"<p>One featurizer per feature space, all writing to <code>{_e(result.config['cache'])}</code>: "
        "each image goes through the network once per feature space; a rerun, or another experiment "
        "on the same images, reads the cache instead.</p>" + _table(pd.DataFrame(rows))
    )


def _config_section(result: ExperimentResult) -> str:
    cfg = pd.DataFrame(list(result.config.items()), columns=["setting", "value"])
    ver = pd.DataFrame(list(versions().items()), columns=["package", "version"])
    tim = pd.DataFrame(
        [(k, f"{v:.1f}") for k, v in result.timings.items()], columns=["stage", "seconds"]
    )
    files = " · ".join(
        f'<a href="{_e(f)}">{_e(f)}</a>' for f in dict.fromkeys(result.files.values())
    )
    return (
        "<h2>Configuration, versions, timings</h2>"
        + _table(cfg, left=2)
        + _table(ver, left=2)
        + _table(tim)
        + f"<p>Files: {files}</p>"
    )


def render_html(result: ExperimentResult, title: str) -> str:
    """The whole report as one HTML string (figures embedded)."""
    d = result.data
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    curve_roles = {TRANSFER, AUTO, *(s.role for s in result.spaces if s.is_baseline)}
    sections = [
        _headline(result),
        _audit_section(result),
        _protocol_section(result),
        "<h2>Learning curves</h2>",
        _img(
            result,
            "learning_curves",
            "Mean held-out accuracy per k; bands: 95% t-intervals over draws; dashed: baselines; "
            "dotted grey: power-law fit with its bootstrap band.",
        ),
        "<p>Held-out accuracy in % [95% CI] per feature space and k:</p>",
        _summary_table(result, curve_roles),
        _gain_section(result),
        _extrapolation_section(result),
    ]
    if result.strategies is not None:
        sections.append(strategies.strategy_section_html(result.strategies, _img(
            result, "strategies", "Held-out accuracy per k, frozen features vs fine-tuned on the same draws; "
            "bands: 95% t-intervals over draws.")))
    if "layer_sweep" in result.files:
        sections += [
            "<h2>Layer sweep</h2>",
            _img(
                result,
                "layer_sweep",
                "Accuracy per cut point of the main backbone, one line per k.",
            ),
            _summary_table(result, {LAYER, TRANSFER}),
        ]
    sections += [
        _errors_section(result),
        _calibration_section(result),
        _cache_section(result),
        _config_section(result),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>deepfeat experiment: {_e(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>deepfeat experiment: {_e(title)}</h1>\n"
        f'<p class="meta">{when} · {d["images"]} images, {d["classes"]} classes · {_e(d["protocol"])} · '
        f"{d['n_draws']} draws × {len(result.spaces)} feature spaces · "
        f"{result.timings.get('total', 0):.0f} s</p>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_outputs(result: ExperimentResult, title: str) -> Path:
    """Write tables, figures and ``report.html`` into ``result.out``; return the HTML path."""
    result.files.update(write_tables(result))
    result.files.update(write_figures(result))
    result.files["report"] = "report.html"
    path = result.out / "report.html"
    path.write_text(render_html(result, title), encoding="utf-8")
    return path
