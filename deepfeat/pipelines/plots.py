"""PNG figures for experiment reports, drawn with matplotlib's Agg canvas.

Figures are built as ``matplotlib.figure.Figure`` objects (no pyplot state), so plotting
works in threads, headless servers and tests alike. Each function writes one PNG and
returns its path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepfeat.exceptions import ImageDecodeError
from deepfeat.featurize.decode import decode_image
from deepfeat.pipelines.extrapolate import Extrapolation

__all__ = [
    "plot_learning_curves",
    "plot_layer_sweep",
    "plot_confusion",
    "most_confused",
    "MAX_CONFUSION_CLASSES",
    "plot_gallery",
    "plot_pairs",
    "plot_reliability",
    "thumbnail",
]

log = logging.getLogger(__name__)

_THUMB = 160


def _save(fig: Figure, path: str | os.PathLike) -> str:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return os.fspath(path)


def thumbnail(path: str, size: int = _THUMB) -> np.ndarray | None:
    """Decode ``path`` into an RGB array no larger than ``size``; ``None`` when undecodable."""
    try:
        img = decode_image(path, draft_size=size)
    except ImageDecodeError:
        return None
    img.thumbnail((size, size))
    return np.asarray(img)


def _show(ax, path: str, caption: str, color: str = "black") -> None:
    arr = thumbnail(path)
    if arr is None:
        ax.text(0.5, 0.5, "cannot decode", ha="center", va="center", fontsize=8)
    else:
        small = max(arr.shape[:2]) < 64
        ax.imshow(arr, interpolation="nearest" if small else "antialiased")
    ax.set_title(caption, fontsize=8, color=color)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_learning_curves(
    summary: pd.DataFrame,
    labels: Mapping[str, str],
    path: str | os.PathLike,
    *,
    baselines: Sequence[str] = (),
    extrapolation: tuple[str, Extrapolation] | None = None,
    title: str = "Learning curves",
    ci_label: str = "95% CI",
) -> str:
    """Accuracy against labels per class (log axis), one line and CI band per space.

    Parameters
    ----------
    summary : pandas.DataFrame
        From :func:`~deepfeat.pipelines.summary.summarize`.
    labels : mapping
        Space name to legend label, in legend order.
    path : path-like
        Output PNG.
    baselines : sequence of str
        Spaces drawn dashed (baselines).
    extrapolation : (space, Extrapolation), optional
        A fitted power law drawn dotted, with its bootstrap band, beyond the measured k.
    """
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    for name, label in labels.items():
        s = summary[summary.space == name].sort_values("k")
        if s.empty:
            continue
        style = "--" if name in baselines else "-"
        (line,) = ax.plot(s.k, s["mean"], style, marker="o", label=label)
        band = s.dropna(subset=["ci_low"])
        if len(band):
            # numpy arrays: matplotlib 3.7.0 cannot mask pandas 2 Series in fill_between
            ax.fill_between(
                band.k.to_numpy(),
                band.ci_low.clip(0, 1).to_numpy(),
                band.ci_high.clip(0, 1).to_numpy(),
                color=line.get_color(),
                alpha=0.15,
                linewidth=0,
            )
    if extrapolation is not None:
        name, ex = extrapolation
        k_max = float(ex.k_measured.max())
        finite = [t.labels for t in ex.targets if np.isfinite(t.labels)]
        k_end = min(max([k_max * 4, *finite]), k_max * 20)
        grid = np.geomspace(float(ex.k_measured.min()), k_end, 100)
        ax.plot(
            grid,
            ex.law.accuracy(grid),
            ":",
            color="gray",
            label=f"power-law fit to {labels.get(name, name)} (ceiling: {ex.law.ceiling_text()})",
        )
        if ex.boot:
            lo, hi = ex.band(grid)
            ax.fill_between(grid, lo, hi, color="gray", alpha=0.12, linewidth=0)
    ax.set_xscale("log")
    ticks = summary.drop_duplicates("shots").sort_values("k")
    ax.set_xticks(
        ticks.k,
        [
            f"all\n({k:.3g})" if s == "all" else f"{k:g}"
            for s, k in zip(ticks.shots, ticks.k, strict=True)
        ],
    )
    ax.minorticks_off()
    ax.set_xlabel("labelled training images per class (k)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"{title} (bands: {ci_label})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_layer_sweep(
    summary: pd.DataFrame,
    layers: Mapping[str, str],
    path: str | os.PathLike,
    *,
    title: str = "Layer sweep",
) -> str:
    """Accuracy per cut point (early to penultimate), one line per shot value, CI error bars.

    ``layers`` maps space names to x-axis labels in order from early to late.
    """
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    names = list(layers)
    x = np.arange(len(names))
    for shots, grp in summary[summary.space.isin(names)].groupby("shots", sort=False):
        g = grp.set_index("space").reindex(names)
        err = np.clip(np.vstack([g["mean"] - g.ci_low, g.ci_high - g["mean"]]), 0, None)
        ax.errorbar(
            x, g["mean"], yerr=np.nan_to_num(err), marker="o", capsize=3, label=f"k={shots}"
        )
    ax.set_xticks(x, [layers[n] for n in names], rotation=15, fontsize=8)
    ax.set_xlabel("cut point (early → penultimate)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_confusion(
    y_true: Sequence,
    y_pred: Sequence,
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "Confusion matrix",
) -> str:
    """Row-normalised confusion matrix (each row sums to 1) with counts in the cells.

    Beyond :data:`MAX_CONFUSION_CLASSES` classes the labels cannot be read: the plot then
    shows the classes with the most errors (as true or predicted class) and its title says
    how many of how many it shows.
    """
    from sklearn.metrics import confusion_matrix

    classes = list(classes)
    cm = confusion_matrix(y_true, y_pred, labels=classes)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    if len(classes) > MAX_CONFUSION_CLASSES:
        keep = most_confused(cm, MAX_CONFUSION_CLASSES)
        title = (f"{title}\n{len(keep)} of {len(classes)} classes: those with the most errors "
                 f"(rows still sum over all classes)")
        cm, norm = cm[np.ix_(keep, keep)], norm[np.ix_(keep, keep)]
        classes = [classes[i] for i in keep]
    n = len(classes)
    side = min(2.5 + 0.45 * n, 14)
    fig = Figure(figsize=(side + 1, side))
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    if n <= 30:
        for (r, c), v in np.ndenumerate(cm):
            if v:
                ax.text(
                    c,
                    r,
                    str(v),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[r, c] > 0.5 else "black",
                )
    ticks = np.arange(n)
    ax.set_xticks(ticks, classes, rotation=90, fontsize=8)
    ax.set_yticks(ticks, classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


#: The most classes a confusion-matrix plot labels (beyond, the most confused are shown).
MAX_CONFUSION_CLASSES = 40


def most_confused(cm: np.ndarray, n: int) -> list[int]:
    """Indices of the ``n`` classes with the most errors (off-diagonal counts in their row
    and column), in their original order; all classes when there are ``n`` or fewer.

    Examples
    --------
    >>> most_confused(np.array([[5, 0, 0], [0, 3, 2], [0, 1, 4]]), 2)
    [1, 2]
    """
    cm = np.asarray(cm)
    if len(cm) <= n:
        return list(range(len(cm)))
    off = cm - np.diag(np.diag(cm))
    errors = off.sum(axis=0) + off.sum(axis=1)
    order = np.lexsort((np.arange(len(cm)), -errors))  # most errors first, ties by index
    return sorted(int(i) for i in order[:n])


def plot_gallery(
    items: Sequence[dict[str, Any]], path: str | os.PathLike, *, title: str, cols: int = 6
) -> str:
    """A grid of thumbnails; each item has ``path`` and ``caption`` (and optional ``color``)."""
    n = max(len(items), 1)
    cols = min(cols, n)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(2 * cols, 2.3 * rows + 0.4))
    fig.suptitle(title, fontsize=10)
    for idx in range(rows * cols):
        ax = fig.add_subplot(rows, cols, idx + 1)
        if idx < len(items):
            it = items[idx]
            _show(ax, it["path"], it["caption"], it.get("color", "black"))
        else:
            ax.axis("off")
    if not items:
        fig.axes[0].text(0.5, 0.5, "nothing to show", ha="center", va="center")
    return _save(fig, path)


def _pair_image(path_a: str, path_b: str, size: int = _THUMB) -> np.ndarray:
    """Two thumbnails side by side on a white strip (grey boxes for undecodable files)."""
    tiles = []
    for path in (path_a, path_b):
        arr = thumbnail(path, size)
        if arr is None:
            arr = np.full((size, size, 3), 200, np.uint8)
        elif max(arr.shape[:2]) < size // 2:  # tiny images (digits): enlarge without blur
            rep = size // max(arr.shape[:2])
            arr = arr.repeat(rep, axis=0).repeat(rep, axis=1)
        tile = np.full((size, size, 3), 255, np.uint8)
        h, w = arr.shape[:2]
        tile[(size - h) // 2 : (size - h) // 2 + h, (size - w) // 2 : (size - w) // 2 + w] = arr
        tiles.append(tile)
    gap = np.full((size, 8, 3), 255, np.uint8)
    return np.concatenate([tiles[0], gap, tiles[1]], axis=1)


def plot_pairs(
    pairs: pd.DataFrame, path: str | os.PathLike, *, title: str, limit: int = 9, cols: int = 3
) -> str:
    """Duplicate pairs, each pair one panel (the two images side by side) with its verdict.

    A red title marks a leak (the pair straddles the train/test split) or conflicting
    labels; black marks a duplicate inside one class on one side of the split.
    """
    shown = pairs.head(limit)
    n = max(len(shown), 1)
    cols = min(cols, n)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(3.6 * cols, 2.5 * rows + 0.5))
    fig.suptitle(title, fontsize=10)
    for idx, (_, p) in enumerate(shown.iterrows()):
        ax = fig.add_subplot(rows, cols, idx + 1)
        ax.imshow(_pair_image(str(p.path_i), str(p.path_j)))
        kind = "identical files" if p.match == "exact" else f"cosine {p.similarity:.3f}"
        flag = "LEAK: " if p.leak else ("LABELS DIFFER: " if p.conflicting_labels else "")
        names = [os.path.basename(str(p[f"path_{s}"]))[:18] for s in ("i", "j")]
        sides = [
            f"{p[f'label_{s}']}" + (f" [{p[f'split_{s}']}]" if p[f"split_{s}"] != "all" else "")
            for s in ("i", "j")
        ]
        ax.set_title(
            f"{flag}{kind}\n{sides[0]} | {sides[1]}\n{names[0]} | {names[1]}",
            fontsize=8,
            color="red" if p.leak or p.conflicting_labels else "black",
        )
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def plot_reliability(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike,
    *,
    title: str = "Reliability: accuracy vs predicted probability",
) -> str:
    """Reliability diagram: per confidence bin, accuracy against mean top probability.

    Parameters
    ----------
    curves : mapping of str to list of dict
        Legend label -> the ``reliability`` bins of
        :func:`~deepfeat.classify.metrics.calibration_report` (empty bins are skipped);
        the label may carry the ECE. Marker areas follow the bins' sizes.
    path : str or path-like
        PNG to write.
    """
    fig = Figure(figsize=(5.2, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="perfectly calibrated")
    for k, (name, bins) in enumerate(curves.items()):
        full = [b for b in bins if b["n"]]
        if not full:
            continue
        conf = [b["confidence"] for b in full]
        acc = [b["accuracy"] for b in full]
        n = np.array([b["n"] for b in full], dtype=float)
        line = ax.plot(conf, acc, marker="", color=f"C{k}", label=name)[0]
        ax.scatter(conf, acc, s=20 + 180 * n / n.max(), color=line.get_color(), alpha=0.7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability of the predicted class (10 bins)")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)
