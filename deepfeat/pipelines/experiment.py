"""``run_experiment``: audit, learning curves, layer sweep, baselines and a report, in one call.

The steps run in the order data flows: load the labelled images, featurize every feature
space through one shared cache, audit the data (duplicates, conflicting labels, leakage),
draw fixed-seed k-shot training sets, train nested-tuned heads, summarise with intervals,
extrapolate, and write tables, figures and a self-contained HTML report.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepfeat.exceptions import InvalidParameterError, WeightsUnavailableError
from deepfeat.pipelines.audit import (
    NEAR_DUPLICATE_THRESHOLD,
    DataAudit,
    audit_dataset,
    check_threshold,
)
from deepfeat.pipelines.data import load_experiment_data
from deepfeat.pipelines.extrapolate import (
    Extrapolation,
    PowerLawFitError,
    check_targets,
    extrapolate,
)
from deepfeat.pipelines.heads import SearchFactory, default_search_factory, describe_search
from deepfeat.pipelines.pixels import PIXEL_SIZE, pixel_features
from deepfeat.pipelines.protocol import make_draws, run_protocol
from deepfeat.pipelines.sampling import check_test_size, parse_shots, stratified_split
from deepfeat.pipelines.spaces import (
    AUTO,
    RANDOM_BASELINE,
    RANDOM_SUFFIX,
    FeatureSpace,
    compute_space,
    plan_spaces,
    suggest_layers,
)
from deepfeat.pipelines.strategies import (
    FINETUNE,
    parse_strategies,
    run_finetune_strategy,
    run_text_finetune_strategy,
)
from deepfeat.pipelines.summary import (
    gains_to_dict,
    paired_gain,
    reference_shots,
    summarize,
    transfer_verdict,
)

__all__ = ["DEFAULT_SHOTS", "ExperimentResult", "run_experiment", "versions"]

log = logging.getLogger(__name__)

DEFAULT_SHOTS = (1, 2, 5, 10, 20, "all")
DEFAULT_TARGETS = (0.8, 0.9, 0.95)
#: Side of the pixel thumbnails near-duplicate candidates are confirmed with.
AUDIT_THUMBNAIL = 16
_SPACE_COLUMNS = ["role", "backbone", "layer", "weights", "label"]


@dataclass
class ExperimentResult:
    """Everything an experiment measured and where it was written.

    Attributes
    ----------
    out : pathlib.Path
        The report folder.
    config : dict
        The arguments, as run.
    spaces : list of FeatureSpace
        Main space first.
    table : pandas.DataFrame
        Tidy per-draw results (one row per space, shot value and repeat).
    summary : pandas.DataFrame
        Mean and 95% t-interval per space and shot value.
    gains : dict of str to pandas.DataFrame
        Paired gain of the main space over each baseline space, per shot value.
    verdicts : list of str
        Plain sentences on transfer versus each baseline.
    extrapolations : dict of str to Extrapolation
        Power-law fits per space (where three or more k values were measured).
    extrapolation_failures : dict of str to str
        Spaces whose power-law fit failed (did not converge), with the reason; the rest
        of the experiment is reported as usual.
    audit : DataAudit
    featurization : dict of str to dict
        Per space: images, cache hits, forward passes, failures, seconds.
    best : dict
        The space with the highest mean accuracy at the reference shot value (the
        largest k measured on several draws) and the held-out predictions of all its
        draws there (``test``, ``y_pred``, ``confidence``, ``repeat``, ``n_draws``).
    data : dict
        Counts of images, classes, pool and test set, and the protocol in words.
    paths, labels, split : sequences
        Every image of the run, its label and its side (``"train"``/``"test"``).
    notes : list of str
        Everything the run adjusted or skipped, and why.
    timings : dict of str to float
        Seconds per stage.
    files : dict of str to str
        Output files, relative to ``out``.
    strategies : StrategyComparison or None
        Frozen features vs fine-tuning on the same draws (``strategies`` included
        ``"finetune"``); see :mod:`deepfeat.pipelines.strategies`.
    """

    out: Path
    config: dict[str, Any]
    spaces: list[FeatureSpace]
    table: pd.DataFrame
    summary: pd.DataFrame
    gains: dict[str, pd.DataFrame]
    verdicts: list[str]
    extrapolations: dict[str, Extrapolation]
    audit: DataAudit
    featurization: dict[str, dict[str, Any]]
    best: dict[str, Any]
    data: dict[str, Any]
    paths: list[str] = field(default_factory=list, repr=False)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str), repr=False)
    split: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str), repr=False)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    extrapolation_failures: dict[str, str] = field(default_factory=dict)
    strategies: Any = None  # StrategyComparison (frozen vs fine-tuned) when asked for

    @property
    def report_html(self) -> Path:
        """Path of the HTML report."""
        return self.out / self.files.get("report", "report.html")

    @property
    def main(self) -> FeatureSpace:
        return self.spaces[0]

    @property
    def labels_space(self) -> str:
        """The space "how many labels" is answered for: the one ``deepfeat fit`` would use.

        The automatic choice (``select="auto"``) when it was measured, else the main space.
        """
        return next((s.name for s in self.spaces if s.role == AUTO), self.main.name)

    def _calibration(self) -> dict[str, Any]:
        """Held-out log-loss and ECE of the best space at the reference k (means over draws)."""
        t, b = self.table, self.best
        rows = t[(t["space"] == b["space"]) & (t["shots"] == str(b["shots"]))]
        if "log_loss" not in rows or rows["log_loss"].isna().all():
            return {}
        return {
            "space": b["space"],
            "shots": str(b["shots"]),
            "draws": int(len(rows)),
            "log_loss": float(rows["log_loss"].mean()),
            "ece": float(rows["ece"].mean()),
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able digest (the full tables are in the CSV files)."""

        def cell(r: pd.Series) -> dict[str, Any]:
            lo, hi = (None if not np.isfinite(v) else float(v) for v in (r.ci_low, r.ci_high))
            return {
                "k": float(r.k),
                "draws": int(r.repeats),
                "mean": float(r["mean"]),
                "ci_low": lo,
                "ci_high": hi,
            }

        accuracy = {
            space: {str(r.shots): cell(r) for _, r in grp.iterrows()}
            for space, grp in self.summary.groupby("space", sort=False)
        }
        return {
            "report": str(self.report_html),
            "out": str(self.out),
            "data": self.data,
            "main_space": self.main.name,
            "labels_space": self.labels_space,
            "reference_shots": self.best["shots"],
            "accuracy": accuracy,
            "gains": gains_to_dict(self.gains),
            "verdicts": self.verdicts,
            "calibration": self._calibration(),
            "extrapolation": {k: v.to_dict() for k, v in self.extrapolations.items()},
            "extrapolation_failures": self.extrapolation_failures,
            "audit": self.audit.to_dict(),
            "cache": {
                k: {x: v.get(x) for x in ("total", "cached", "featurized", "failed", "seconds")}
                for k, v in self.featurization.items()
            },
            "notes": self.notes,
            "timings": self.timings,
            "files": self.files,
            **({"strategies": self.strategies.to_dict()} if self.strategies is not None else {}),
        }


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape the numbers."""
    import matplotlib
    import sklearn
    import torch

    from deepfeat import __version__

    out = {
        "deepfeat": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": torch.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(terse=True),
    }
    for mod in ("torchvision", "timm", "h5py"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:  # pragma: no cover
            pass
    return out


def _pooled(predictions: dict, space: str, shots: str) -> dict[str, Any]:
    """Held-out predictions of every draw of ``space`` at ``shots``, concatenated."""
    runs = [
        v | {"repeat": r}
        for (sp, sh, r), v in sorted(predictions.items())
        if (sp, sh) == (space, shots)
    ]
    return {
        "test": np.concatenate([v["test"] for v in runs]),
        "y_pred": np.concatenate([v["y_pred"] for v in runs]),
        "confidence": np.concatenate([v["confidence"] for v in runs]),
        "repeat": np.concatenate([np.full(len(v["test"]), v["repeat"]) for v in runs]),
        "n_draws": len(runs),
    }


def _describe_head(search: str, factory: SearchFactory | None) -> str:
    if factory is not None:
        return f"custom search factory {getattr(factory, '__name__', repr(factory))}"
    return describe_search(search)


def _featurize(
    spaces: list[FeatureSpace],
    paths: list[str],
    cache: str,
    options: dict | None,
    pixel_size: int,
    progress: bool,
    notes: list[str],
) -> dict[str, Any]:
    """Features of every space; a comparison space whose weights cannot be had is dropped."""
    computed = {}
    for space in list(spaces):
        try:
            computed[space.name] = compute_space(
                space,
                paths,
                cache=cache,
                featurizer_options=options,
                pixel_size=pixel_size,
                progress=progress,
            )
        except WeightsUnavailableError as exc:
            if space is spaces[0]:
                raise
            # One comparison lost is no reason to lose the rest of the experiment.
            spaces.remove(space)
            notes.append(f"{space.label} left out: {exc}")
            log.warning("%s left out: %s", space.label, exc)
    return computed


def _versus(baseline: FeatureSpace, main: FeatureSpace) -> str:
    """A baseline as a verdict names it after "the": "same network with random weights".

    Examples
    --------
    >>> from deepfeat.pipelines.spaces import plan_spaces
    >>> main, rnd, pix = plan_spaces(["efficientnet_lite0"])
    >>> _versus(rnd, main), _versus(pix, main)
    ('same network with random weights', 'raw pixels 32×32 RGB')
    """
    if baseline.role != RANDOM_BASELINE:
        return baseline.label
    if (baseline.backbone, baseline.layer) == (main.backbone, main.layer):
        return "same network with random weights"
    return f"{baseline.backbone} with random weights"


def _analyse(
    table: pd.DataFrame,
    spaces: list[FeatureSpace],
    targets: Sequence[float],
    seed: int,
    notes: list[str],
    failed_fits: dict[str, str] | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], list[str], dict[str, Extrapolation]]:
    """Summary with intervals, paired gains and verdicts, power-law extrapolations.

    ``table`` is the per-draw table with the space description columns. A power-law fit
    that fails is left out, its reason in ``notes`` and ``failed_fits`` (space -> reason).
    """
    meta = table[["space", *_SPACE_COLUMNS]].drop_duplicates("space")
    summary = summarize(table).merge(meta, on="space", how="left")
    main = spaces[0]
    gains, verdicts = {}, []
    for s in spaces:
        if s.is_baseline:
            gains[s.name] = paired_gain(table, main.name, s.name)
            verdicts.append(transfer_verdict(gains[s.name], main.label, _versus(s, main)))
    extrapolations = {}
    for s in spaces:
        rows = table[table.space == s.name]
        if rows.k.nunique() < 3:
            if s is main:
                notes.append("no power-law extrapolation: it needs at least three distinct k values")
            continue
        try:
            extrapolations[s.name] = extrapolate(
                rows.k, rows.accuracy, rows.repeat, targets=targets, seed=seed
            )
        except PowerLawFitError as exc:
            # The training is done and measured: report it, without this one curve's fit.
            notes.append(f"{s.label}: no power-law extrapolation: {exc}")
            if failed_fits is not None:
                failed_fits[s.name] = str(exc)
            log.warning("%s: no power-law extrapolation: %s", s.label, exc)
    return summary, gains, verdicts, extrapolations


def _stratified_sides(
    labels: np.ndarray, valid: np.ndarray, test_size: int | float, seed: int
) -> np.ndarray:
    """``"train"``/``"test"`` per image from a fixed-seed split of the usable images."""
    ok_idx = np.flatnonzero(valid)
    _, te = stratified_split(labels[ok_idx], test_size, seed=seed)
    split = np.full(len(labels), "train", dtype=object)
    split[ok_idx[te]] = "test"
    return split


def _dropped(audit: DataAudit, fixed_test: bool, notes: list[str]) -> np.ndarray:
    """What --drop-leaked removes: leaked test images, or all but one of each duplicate group."""
    if fixed_test:
        dropped, why = audit.leaked_test(), "test images duplicating a training image"
    else:
        dropped = audit.redundant()
        why = "all but one image of each duplicate group, as there is no fixed test set"
    notes.append(f"--drop-leaked: {len(dropped)} image(s) dropped ({why})")
    return dropped


def _describe_protocol(test_src: Any, test_size: int | float | None) -> str:
    if test_src is not None:
        return "given test set"
    if isinstance(test_size, int):
        return f"fixed-seed stratified split, {test_size} per class held out"
    if test_size:
        return f"fixed-seed stratified split, {test_size:.0%} of each class held out"
    return "rest held out: each draw is scored on every usable image it did not train on"


def run_experiment(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    backbones: Sequence[str] = ("efficientnet_lite0",),
    layers: Sequence[str] | str = (),
    shots: Sequence[int | str] | str = DEFAULT_SHOTS,
    repeats: int = 3,
    test_src: str | os.PathLike | None = None,
    test_size: int | float | None = None,
    cache: str | os.PathLike | None = None,
    drop_leaked: bool = False,
    baselines: Sequence[str] = ("pixels", "random"),
    near_duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD,
    targets: Sequence[float] = DEFAULT_TARGETS,
    max_per_class: int | None = None,
    pixel_size: int = PIXEL_SIZE,
    seed: int = 0,
    search: str = "fast",
    search_factory: SearchFactory | None = None,
    featurizer_options: dict[str, Any] | None = None,
    title: str | None = None,
    verbose: bool = False,
    strategies: Sequence[str] | str = ("frozen",),
    finetune_options: dict[str, Any] | None = None,
    select: str = "none",
    text_column: str = "text",
) -> ExperimentResult:
    """Run a small-data transfer-learning experiment and write its report to ``out``.

    The source may hold texts (a CSV/parquet with a ``text_column`` column, or class folders
    of ``.txt`` files): the main backbone is then a text encoder (``minilm`` when
    ``backbones`` is left at the image default), the ``pixels`` baseline becomes the TF-IDF
    space (``tfidf``), the audit compares texts (exact duplicates: the same text), and the
    report lists misclassified texts as text (see :func:`text_settings`).

    Parameters
    ----------
    src : path-like
        Folder of class subfolders (or a CSV/parquet manifest) of labelled images.
    out : path-like
        Report folder (created): ``report.html``, ``results.csv`` (and ``.parquet``),
        ``summary.csv``, ``gains.csv``, ``audit_pairs.csv``, ``experiment.json``, PNGs.
    backbones : sequence of str
        Backbones compared at their penultimate layer; the first is the main space.
    layers : sequence of str or "auto"
        Extra cut points of the first backbone for a layer sweep; ``"auto"`` picks one
        per stage (see :func:`~deepfeat.pipelines.spaces.suggest_layers`).
    shots : sequence of int or "all", or str
        Labelled images per class, e.g. ``"1,2,5,10,20,all"``.
    repeats : int
        Random draws per shot value (seeds ``seed .. seed+repeats-1``).
    test_src : path-like, optional
        A separate labelled test set. Without it and without ``test_size``, each draw is
        scored on every image it did not train on ("rest held out").
    test_size : int or float, optional
        Hold out this many images per class (int) or this fraction of each class (float)
        with a fixed-seed stratified split; training images are drawn from the rest.
    cache : path-like, optional
        HDF5 feature cache shared by all spaces (default: ``out/features.h5``).
    drop_leaked : bool
        Drop test images that duplicate a training image (exact or near). Without a fixed
        test set, keep one image of each duplicate group instead.
    baselines : sequence of {"pixels", "random"}
        Raw pixels, and the first backbone with random weights, measured the same way.
    near_duplicate_threshold : float
        Cosine similarity of main-space embeddings above which images are near duplicates.
    targets : sequence of float
        Target accuracies for the power-law extrapolation.
    max_per_class : int, optional
        Subsample each class (fixed seed) to bound the run time; the report says so.
    pixel_size : int
        Side of the raw-pixel baseline's square.
    seed : int
        Base seed of splits and draws; the same seed gives the same tables.
    search : {"fast", "full"}
        The hyperparameter search run inside each training draw (see
        :mod:`deepfeat.pipelines.heads`): ``"fast"`` tunes C of a logistic regression,
        ``"full"`` is classify's complete search (several times slower).
    search_factory : callable, optional
        ``factory(y_train, seed) -> estimator`` for the tuned head (nested CV inside the
        training draw); overrides ``search``.
    featurizer_options : dict, optional
        Extra :class:`~deepfeat.featurize.Featurizer` arguments (``device``, ``batch_size``...).
    select : {"none", "auto"}, default="none"
        ``"auto"``: also measure the automatic choice of ``deepfeat fit`` (space and head
        chosen by CV among the pretrained spaces and their concatenations, *inside each
        training draw*: see :func:`auto_selection_space`), as an extra curve ``auto``.
    title : str, optional
        Report title (default: the source folder's name).
    verbose : bool
        Progress bars on stderr.
    strategies : sequence of {"frozen", "finetune"} or str
        ``"frozen,finetune"`` also fine-tunes the main backbone inside every training
        draw and compares it with its frozen features on the same draws (paired gains,
        intervals, training time per k, a verdict, a figure); see
        :mod:`deepfeat.pipelines.strategies`.
    finetune_options : dict, optional
        :class:`~deepfeat.finetune.Recipe` fields (``epochs``, ``lr``, ``freeze``...).

    Returns
    -------
    ExperimentResult

    Raises
    ------
    InputError
        When the data cannot support any requested shot value, or a source is unusable.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = os.fspath(cache) if cache is not None else os.fspath(out / "features.h5")
    # Every setting is checked before any image is read: a typo costs nothing.
    shot_list = parse_shots(shots)
    strategy_list = parse_strategies(strategies)
    if test_src is not None and test_size is not None:
        raise InvalidParameterError("give either test_src or test_size, not both")
    if test_size is not None:
        check_test_size(test_size)
    targets = check_targets(targets)
    check_threshold(near_duplicate_threshold)
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise InvalidParameterError(f"repeats must be an integer >= 1, got {repeats!r}")
    modality, backbones, baselines = text_settings(src, backbones, baselines, text_column, strategy_list, select)
    if isinstance(layers, str):
        layers = (
            suggest_layers(backbones[0])
            if layers == "auto"
            else [x for x in layers.split(",") if x]
        )
    config = {
        "src": os.fspath(src),
        "out": os.fspath(out),
        "backbones": list(backbones),
        "layers": list(layers),
        "shots": [str(s) for s in shot_list],
        "repeats": repeats,
        "test_src": None if test_src is None else os.fspath(test_src),
        "test_size": test_size,
        "cache": cache_path,
        "drop_leaked": drop_leaked,
        "baselines": list(baselines),
        "near_duplicate_threshold": near_duplicate_threshold,
        "audit_thumbnail": AUDIT_THUMBNAIL,
        "targets": list(targets),
        "max_per_class": max_per_class,
        "pixel_size": pixel_size,
        "seed": seed,
        "search": search if search_factory is None else "custom search_factory",
        "head": _describe_head(search, search_factory),
        "select": select,
        "featurizer_options": featurizer_options or {},
        "strategies": list(strategy_list),
        "finetune_options": finetune_options or {},
        "modality": modality,
    }

    if select not in ("none", "auto"):
        raise InvalidParameterError(f"select must be 'none' or 'auto', got {select!r}")
    t0 = time.perf_counter()
    data = load_experiment_data(src, test_src, max_per_class=max_per_class, seed=seed,
                                text_col=text_column if modality == "text" else None)
    notes += data.notes
    paths, labels, split = data.paths, data.labels, data.split
    spaces = plan_spaces(backbones, layers, baselines, pixel_size=pixel_size)
    timings["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    computed = _featurize(spaces, paths, cache_path, featurizer_options, pixel_size, verbose, notes)
    timings["featurize"] = time.perf_counter() - t0
    main = computed[spaces[0].name]
    valid = np.logical_and.reduce([c.ok for c in computed.values()])

    if test_size is not None:
        split = _stratified_sides(labels, valid, test_size, seed)
    fixed_test = test_src is not None or test_size is not None

    t0 = time.perf_counter()
    audit = audit_dataset(
        paths,
        labels,
        main.keys or [None] * len(paths),
        np.where(valid[:, None], main.features, np.nan),
        split=split if fixed_test else None,
        threshold=near_duplicate_threshold,
        failures=main.failures,
        skipped=data.skipped,
        thumbnails=None if modality == "text" else (
            lambda idx: pixel_features([paths[i] for i in idx], AUDIT_THUMBNAIL)),
    )
    dropped = _dropped(audit, fixed_test, notes) if drop_leaked else np.zeros(0, dtype=int)
    audit.dropped = len(dropped)
    timings["audit"] = time.perf_counter() - t0

    usable = valid.copy()
    usable[dropped] = False
    pool = np.flatnonzero(usable & (np.asarray(split) == "train"))
    test = np.flatnonzero(usable & (np.asarray(split) == "test")) if fixed_test else None
    draws, draw_notes = make_draws(
        labels, shot_list, repeats, seed=seed, train_pool=pool, test=test
    )
    notes += draw_notes

    t0 = time.perf_counter()
    proto = run_protocol(
        {name: c.features for name, c in computed.items()},
        labels,
        draws,
        search_factory=search_factory or partial(default_search_factory, search=search),
        progress=verbose,
    )
    if select == "auto":
        proto = auto_selection_space(
            spaces, computed, labels, draws, proto, verbose, paths=paths, cache=cache_path,
            featurizer_options=featurizer_options,
        )
    timings["train_and_score"] = time.perf_counter() - t0

    meta = pd.DataFrame([{**s.to_dict(), "space": s.name} for s in spaces]).drop(columns="name")
    table = proto.table.merge(meta, on="space", how="left")
    failed_fits: dict[str, str] = {}
    summary, gains, verdicts, extrapolations = _analyse(
        table, spaces, targets, seed, notes, failed_fits
    )

    comparison = None
    if FINETUNE in strategy_list and modality == "text":
        t0 = time.perf_counter()
        comparison = run_text_finetune_strategy(
            paths, labels, draws, proto.table[proto.table.space == spaces[0].name],
            work_dir=os.fspath(out / "finetune"),
        )
        timings["finetune"] = time.perf_counter() - t0
    elif FINETUNE in strategy_list:
        t0 = time.perf_counter()
        main_space = spaces[0]
        comparison = run_finetune_strategy(
            paths, labels, draws, proto.table[proto.table.space == main_space.name], main.features,
            backbone=main_space.backbone, layer=main_space.layer, weights=main_space.weights,
            cache=cache_path, featurizer_options=featurizer_options,
            finetune_options=finetune_options, work_dir=os.fspath(out / "finetune"), progress=verbose,
        )
        timings["finetune"] = time.perf_counter() - t0

    ref = reference_shots(summary)
    at_ref = summary[summary.shots == ref].sort_values("mean", ascending=False, kind="stable")
    best_name = str(at_ref.space.iloc[0])
    best = {"space": best_name, "shots": ref, **_pooled(proto.predictions, best_name, ref)}

    featurization = {name: c.summary for name, c in computed.items()}
    n_classes = len(np.unique(labels[usable]))
    data_info = {
        "images": len(paths),
        "usable": int(usable.sum()),
        "classes": n_classes,
        "class_names": data.classes,
        "train_pool": len(pool),
        "test": None if test is None else len(test),
        "protocol": _describe_protocol(test_src, test_size),
        "n_draws": len(draws),
    }
    result = ExperimentResult(
        out=out,
        config=config,
        spaces=spaces,
        table=table,
        summary=summary,
        gains=gains,
        verdicts=verdicts,
        extrapolations=extrapolations,
        audit=audit,
        featurization=featurization,
        best=best,
        data=data_info,
        paths=paths,
        labels=labels,
        split=np.asarray(split),
        notes=notes,
        timings=timings,
        extrapolation_failures=failed_fits,
        strategies=comparison,
    )

    from deepfeat.pipelines.report import write_outputs

    t0 = time.perf_counter()
    timings["total"] = time.perf_counter() - t_start  # provisional, for the report
    write_outputs(result, title=title or Path(os.fspath(src)).name)
    timings["report"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    with open(out / "experiment.json", "w") as fh:
        json.dump({"config": config, **_jsonable(result.to_dict())}, fh, indent=1)
    log.info("report written to %s", result.report_html)
    return result


def text_settings(
    src: str | os.PathLike, backbones: Sequence[str], baselines: Sequence[str], text_column: str,
    strategies: Sequence[str], select: str,
) -> tuple[str, list[str], list[str]]:
    """The modality of ``src`` and the backbones and baselines measured on it.

    Texts: the image default backbone becomes ``minilm``, ``pixels`` becomes ``tfidf``; an
    image backbone, fine-tuning or the automatic selection is refused. Images: ``tfidf``
    is dropped (a baseline of texts).

    Raises
    ------
    InvalidParameterError
        An image backbone for texts, a text encoder for images, or a setting not yet
        available for texts.
    """
    from deepfeat.featurize.backbones import DEFAULT_BACKBONE, backbone_modality
    from deepfeat.featurize.text_encoders import DEFAULT_TEXT_BACKBONE
    from deepfeat.featurize.text_sources import is_text_source

    text = os.path.exists(os.fspath(src)) and is_text_source(src, text_col=text_column)
    backbones = list(backbones)
    if not text:
        wrong = [b for b in backbones if backbone_modality(b.removesuffix(RANDOM_SUFFIX)) == "text"]
        if wrong:
            raise InvalidParameterError(f"{src} holds images, but {wrong[0]} reads texts")
        return "image", backbones, [b for b in baselines if b != "tfidf"]
    if backbones == [DEFAULT_BACKBONE]:
        backbones = [DEFAULT_TEXT_BACKBONE]
    wrong = [b for b in backbones if backbone_modality(b.removesuffix(RANDOM_SUFFIX)) != "text"]
    if wrong:
        raise InvalidParameterError(f"{src} holds texts, but backbone {wrong[0]} reads images: use a text "
                                    f"encoder such as {DEFAULT_TEXT_BACKBONE}")
    if FINETUNE in strategies and backbones != [DEFAULT_TEXT_BACKBONE]:
        raise InvalidParameterError(f"strategies: fine-tuning on texts tunes {DEFAULT_TEXT_BACKBONE} alone; "
                                    f"got --backbones {','.join(backbones)}")
    return "text", backbones, list(dict.fromkeys("tfidf" if b == "pixels" else b for b in baselines))


def auto_selection_space(
    spaces, computed, labels, draws, proto, progress: bool = False, *, paths=None, cache=None,
    featurizer_options=None,
):
    """Add the space ``auto`` to ``spaces`` and its draws to ``proto``.

    Inside each training draw :class:`~deepfeat.classify.select_auto.AutoSpaceClassifier`
    chooses a space and a head among ``deepfeat fit``'s own candidates for the main
    backbone (:meth:`~deepfeat.classify.TransferClassifier.candidate_spaces`: cut points,
    flip-averaged and ensemble spaces, under the same cost-aware rule), so the curve is
    what ``fit`` achieves with k labels per class. Without ``paths`` (arrays only) it
    chooses among the experiment's own pretrained spaces.
    """
    from deepfeat.classify.select_auto import AutoSpaceClassifier
    from deepfeat.pipelines.protocol import ProtocolResult

    if paths is None:
        fixed = [s for s in spaces if not s.is_baseline]
        blocks_feats = {s.name: computed[s.name].features for s in fixed}
        candidates, costs = None, None
    else:
        blocks_feats, candidates, costs = _fit_candidates(spaces[0], paths, cache, featurizer_options)
    blocks, start = [], 0
    for name, feats in blocks_feats.items():
        blocks.append((name, start, start + feats.shape[1]))
        start += feats.shape[1]
    X = np.hstack(list(blocks_feats.values()))
    auto = run_protocol(
        {"auto": X},
        labels,
        draws,
        search_factory=lambda y_train, seed: AutoSpaceClassifier(
            blocks, spaces=candidates, costs=costs, random_state=seed
        ),
        progress=progress,
    )
    spaces.append(
        FeatureSpace(
            "auto",
            AUTO,
            None,
            "",
            "DEFAULT",
            "automatic choice (space + head by CV inside each draw, as deepfeat fit)",
        )
    )
    return ProtocolResult(
        table=pd.concat([proto.table, auto.table], ignore_index=True),
        predictions={**proto.predictions, **auto.predictions},
    )


def _fit_candidates(main: FeatureSpace, paths, cache, featurizer_options):
    """``deepfeat fit``'s candidate spaces for ``main``'s backbone, computed on ``paths``
    through the experiment's cache: the parts' features (``{part name: rows}``, NaN rows
    for images that failed), the spaces as ``(name, part names)`` and their costs."""
    from deepfeat.classify import TransferClassifier
    from deepfeat.classify.cost import forward_passes
    from deepfeat.classify.embedder import RUNTIME_PARAMS
    from deepfeat.classify.select_embed import featurize_parts
    from deepfeat.classify.spaces import space_name
    from deepfeat.classify.transfer import without_large_ensembles

    specs = TransferClassifier(backbone=main.backbone, weights=main.weights).candidate_spaces()
    specs, _ = without_large_ensembles(specs, len(paths))
    runtime = {k: v for k, v in (featurizer_options or {}).items() if k in RUNTIME_PARAMS}
    results, _ = featurize_parts(list(paths), specs, {**runtime, "cache": cache})
    feats = {}
    for name, r in results.items():
        res = r["result"]
        feats[name] = np.where(np.asarray(res.ok)[:, None], res.features, np.nan)
    candidates = [(space_name(s), [space_name(p) for p in s]) for s in specs]
    return feats, candidates, {space_name(s): forward_passes(s) for s in specs}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
