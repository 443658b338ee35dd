"""``run_experiment``: audit, learning curves, layer sweep, baselines and a report, in one call.

An experiment is an :class:`~deepfeat.pipelines.experiment_config.ExperimentConfig` run
through stages, in the order data flows, each a function of its own:

1. :func:`resolve_config` -- the settings as they will run (texts or images, ``layers="auto"``,
   the cache path);
2. :func:`load_stage` -- the labelled images or texts and the feature spaces to compare;
3. :func:`featurize_stage` -- every space through one shared cache;
4. :func:`audit_stage` -- duplicates, conflicting labels, leakage; the train/test sides;
5. :func:`protocol_stage` -- fixed-seed k-shot draws and nested-tuned heads on each;
6. :func:`compare_stage` -- intervals, paired gains, verdicts, extrapolations, fine-tuning;
7. :func:`write_stage` -- tables, figures, ``report.html`` and ``experiment.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepfeat.exceptions import InvalidParameterError, WeightsUnavailableError
from deepfeat.jsonable import json_default
from deepfeat.pipelines.audit import DataAudit, audit_dataset
from deepfeat.pipelines.data import ExperimentData, load_experiment_data
from deepfeat.pipelines.experiment_auto import auto_selection_space
from deepfeat.pipelines.experiment_config import DEFAULT_SHOTS, DEFAULT_TARGETS, ExperimentConfig
from deepfeat.pipelines.experiment_result import ExperimentResult, versions
from deepfeat.pipelines.experiment_spaces import (
    RANDOM_BASELINE,
    RANDOM_SUFFIX,
    FeatureSpace,
    compute_space,
    plan_spaces,
    suggest_layers,
)
from deepfeat.pipelines.extrapolate import Extrapolation, PowerLawFitError, extrapolate
from deepfeat.pipelines.heads import SearchFactory, default_search_factory, describe_search
from deepfeat.pipelines.pixels import pixel_features
from deepfeat.pipelines.protocol import Draw, ProtocolResult, make_draws, run_protocol
from deepfeat.pipelines.report import write_outputs
from deepfeat.pipelines.sampling import stratified_split
from deepfeat.pipelines.strategies import (
    FINETUNE,
    run_finetune_strategy,
    run_text_finetune_strategy,
)
from deepfeat.pipelines.summary import paired_gain, reference_shots, summarize, transfer_verdict

__all__ = [
    "DEFAULT_SHOTS",
    "DEFAULT_TARGETS",
    "ExperimentConfig",
    "ExperimentResult",
    "audit_stage",
    "auto_selection_space",
    "compare_stage",
    "featurize_stage",
    "load_stage",
    "protocol_stage",
    "resolve_config",
    "run",
    "run_experiment",
    "text_settings",
    "transfer_verdict",
    "versions",
    "write_stage",
]

log = logging.getLogger(__name__)

#: Side of the pixel thumbnails near-duplicate candidates are confirmed with.
AUDIT_THUMBNAIL = 16
_SPACE_COLUMNS = ["role", "backbone", "layer", "weights", "label"]


def run_experiment(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    search_factory: SearchFactory | None = None,
    verbose: bool = False,
    **settings: Any,
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
        Folder of class subfolders (or a CSV/parquet manifest) of labelled images or texts.
    out : path-like
        Report folder (created): ``report.html``, ``results.csv`` (and ``.parquet``),
        ``summary.csv``, ``gains.csv``, ``audit_pairs.csv``, ``experiment.json``, PNGs.
    search_factory : callable, optional
        ``factory(y_train, seed) -> estimator`` for the tuned head (nested CV inside the
        training draw); overrides ``search``.
    verbose : bool
        Progress bars on stderr.
    **settings
        The fields of :class:`~deepfeat.pipelines.experiment_config.ExperimentConfig`
        (``backbones``, ``layers``, ``shots``, ``repeats``, ``test_src``, ``test_size``,
        ``cache``, ``baselines``, ``select``, ``strategies``...), each checked there.

    Returns
    -------
    ExperimentResult

    Raises
    ------
    InvalidParameterError
        A setting out of range (before anything is read or written).
    InputError
        When the data cannot support any requested shot value, or a source is unusable.
    """
    config = ExperimentConfig(src=src, out=out, **settings)
    return run(config, search_factory=search_factory, verbose=verbose)


def run(
    config: ExperimentConfig, *, search_factory: SearchFactory | None = None, verbose: bool = False
) -> ExperimentResult:
    """Run the experiment ``config`` describes, stage by stage; see :func:`run_experiment`."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = []
    config, modality = resolve_config(config)
    record = {**config.to_dict(), "audit_thumbnail": AUDIT_THUMBNAIL,
              "head": _describe_head(config.search, search_factory), "modality": modality}
    if search_factory is not None:
        record["search"] = "custom search_factory"

    t0 = time.perf_counter()
    data, spaces = load_stage(config, modality)
    notes += data.notes
    timings["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    computed = featurize_stage(config, spaces, data.paths, notes, verbose=verbose)
    timings["featurize"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    audit, sides = audit_stage(config, data, computed[spaces[0].name], computed, modality, notes)
    timings["audit"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    draws, proto = protocol_stage(config, spaces, computed, data, sides, notes,
                                  search_factory=search_factory, verbose=verbose)
    timings["train_and_score"] = time.perf_counter() - t0

    comparison = compare_stage(config, spaces, proto, draws, computed, data, modality, timings, notes,
                               verbose=verbose)
    result = ExperimentResult(
        out=Path(config.out),
        config=record,
        spaces=spaces,
        featurization={name: c.summary for name, c in computed.items()},
        audit=audit,
        data=_data_info(config, data, sides, len(draws)),
        paths=data.paths,
        labels=data.labels,
        split=np.asarray(sides.split),
        notes=notes,
        timings=timings,
        **comparison,
    )
    write_stage(result, config, t_start)
    return result


# -- the stages -----------------------------------------------------------------------------
def resolve_config(config: ExperimentConfig) -> tuple[ExperimentConfig, str]:
    """The configuration as it will run, and the modality of its source.

    Texts get a text encoder and the TF-IDF baseline (:func:`text_settings`); ``layers="auto"``
    becomes the main backbone's suggested cut points; the cache defaults to
    ``out/features.h5``.
    """
    modality, backbones, baselines = text_settings(
        config.src, config.backbones, config.baselines, config.text_column, config.strategies, config.select)
    layers = suggest_layers(backbones[0]) if config.layers == "auto" else config.layers
    cache = config.cache if config.cache is not None else os.path.join(config.out, "features.h5")
    return config.replace(backbones=backbones, baselines=baselines, layers=layers, cache=cache), modality


def load_stage(config: ExperimentConfig, modality: str) -> tuple[ExperimentData, list[FeatureSpace]]:
    """The labelled inputs (and their given train/test sides) and the feature spaces to compare."""
    Path(config.out).mkdir(parents=True, exist_ok=True)
    data = load_experiment_data(config.src, config.test_src, max_per_class=config.max_per_class,
                                seed=config.seed, text_col=config.text_column if modality == "text" else None)
    spaces = plan_spaces(list(config.backbones), list(config.layers), list(config.baselines),
                         pixel_size=config.pixel_size)
    return data, spaces


def featurize_stage(
    config: ExperimentConfig, spaces: list[FeatureSpace], paths: list[str], notes: list[str], *,
    verbose: bool = False,
) -> dict[str, Any]:
    """Features of every space; a comparison space whose weights cannot be had is dropped."""
    computed = {}
    for space in list(spaces):
        try:
            computed[space.name] = compute_space(space, paths, cache=config.cache, pixel_size=config.pixel_size,
                                                 featurizer_options=config.featurizer_options, progress=verbose)
        except WeightsUnavailableError as exc:
            if space is spaces[0]:
                raise
            # One comparison lost is no reason to lose the rest of the experiment.
            spaces.remove(space)
            notes.append(f"{space.label} left out: {exc}")
            log.warning("%s left out: %s", space.label, exc)
    return computed


@dataclass
class Sides:
    """Which inputs train, which test, and which are usable at all.

    Attributes
    ----------
    split : numpy.ndarray
        ``"train"`` or ``"test"`` per input.
    usable : numpy.ndarray of bool
        Featurized in every space and not dropped by ``drop_leaked``.
    pool : numpy.ndarray of int
        The usable training inputs draws are made from.
    test : numpy.ndarray of int or None
        The usable test inputs, or None: each draw is scored on the rest.
    """

    split: np.ndarray
    usable: np.ndarray
    pool: np.ndarray
    test: np.ndarray | None


def audit_stage(
    config: ExperimentConfig, data: ExperimentData, main: Any, computed: dict[str, Any], modality: str,
    notes: list[str],
) -> tuple[DataAudit, Sides]:
    """Audit the data on the main space's embeddings; fix the train/test sides."""
    paths, labels = data.paths, data.labels
    valid = np.logical_and.reduce([c.ok for c in computed.values()])
    split = data.split
    if config.test_size is not None:
        split = _stratified_sides(labels, valid, config.test_size, config.seed)
    fixed_test = config.test_src is not None or config.test_size is not None
    audit = audit_dataset(
        paths,
        labels,
        main.keys or [None] * len(paths),
        np.where(valid[:, None], main.features, np.nan),
        split=split if fixed_test else None,
        threshold=config.near_duplicate_threshold,
        failures=main.failures,
        skipped=data.skipped,
        thumbnails=None if modality == "text" else (
            lambda idx: pixel_features([paths[i] for i in idx], AUDIT_THUMBNAIL)),
    )
    dropped = _dropped(audit, fixed_test, notes) if config.drop_leaked else np.zeros(0, dtype=int)
    audit.dropped = len(dropped)
    usable = valid.copy()
    usable[dropped] = False
    pool = np.flatnonzero(usable & (np.asarray(split) == "train"))
    test = np.flatnonzero(usable & (np.asarray(split) == "test")) if fixed_test else None
    return audit, Sides(split, usable, pool, test)


def protocol_stage(
    config: ExperimentConfig, spaces: list[FeatureSpace], computed: dict[str, Any], data: ExperimentData,
    sides: Sides, notes: list[str], *, search_factory: SearchFactory | None = None, verbose: bool = False,
) -> tuple[list[Draw], ProtocolResult]:
    """Fixed-seed k-shot draws, and every space's tuned head trained and scored on each.

    With ``select="auto"`` the space ``auto`` joins ``spaces``: fit's own choice, made inside
    each draw (:func:`~deepfeat.pipelines.experiment_auto.auto_selection_space`).
    """
    labels = data.labels
    draws, draw_notes = make_draws(labels, list(config.shots), config.repeats, seed=config.seed,
                                   train_pool=sides.pool, test=sides.test)
    notes += draw_notes
    proto = run_protocol(
        {name: c.features for name, c in computed.items()},
        labels,
        draws,
        search_factory=search_factory or partial(default_search_factory, search=config.search),
        progress=verbose,
    )
    if config.select == "auto":
        proto = auto_selection_space(
            spaces, computed, labels, draws, proto, verbose, paths=data.paths, cache=config.cache,
            featurizer_options=config.featurizer_options,
        )
    return draws, proto


def compare_stage(
    config: ExperimentConfig, spaces: list[FeatureSpace], proto: ProtocolResult, draws: list[Draw],
    computed: dict[str, Any], data: ExperimentData, modality: str, timings: dict[str, float],
    notes: list[str], *, verbose: bool = False,
) -> dict[str, Any]:
    """The comparisons: the per-draw table, summary with intervals, paired gains and verdicts,
    extrapolations, the best space's pooled predictions and, with ``strategies`` including
    ``"finetune"``, frozen versus fine-tuned on the same draws.

    Returns the :class:`ExperimentResult` fields they fill.
    """
    meta = pd.DataFrame([{**s.to_dict(), "space": s.name} for s in spaces]).drop(columns="name")
    table = proto.table.merge(meta, on="space", how="left")
    failed_fits: dict[str, str] = {}
    summary, gains, verdicts, extrapolations = _analyse(
        table, spaces, config.targets, config.seed, notes, failed_fits
    )
    comparison = None
    if FINETUNE in config.strategies:
        t0 = time.perf_counter()
        main_space, main_rows = spaces[0], proto.table[proto.table.space == spaces[0].name]
        work_dir = os.path.join(config.out, "finetune")
        if modality == "text":
            comparison = run_text_finetune_strategy(data.paths, data.labels, draws, main_rows, work_dir=work_dir)
        else:
            comparison = run_finetune_strategy(
                data.paths, data.labels, draws, main_rows, computed[main_space.name].features,
                backbone=main_space.backbone, layer=main_space.layer, weights=main_space.weights,
                cache=config.cache, featurizer_options=config.featurizer_options,
                finetune_options=config.finetune_options, work_dir=work_dir, progress=verbose,
            )
        timings["finetune"] = time.perf_counter() - t0
    ref = reference_shots(summary)
    at_ref = summary[summary.shots == ref].sort_values("mean", ascending=False, kind="stable")
    best_name = str(at_ref.space.iloc[0])
    return {
        "table": table, "summary": summary, "gains": gains, "verdicts": verdicts,
        "extrapolations": extrapolations, "extrapolation_failures": failed_fits, "strategies": comparison,
        "best": {"space": best_name, "shots": ref, **_pooled(proto.predictions, best_name, ref)},
    }


def write_stage(result: ExperimentResult, config: ExperimentConfig, t_start: float) -> None:
    """Tables, figures and ``report.html`` (:mod:`deepfeat.pipelines.report`), then
    ``experiment.json``: the configuration as it ran and the digest of the results."""
    t0 = time.perf_counter()
    result.timings["total"] = time.perf_counter() - t_start  # provisional, for the report
    write_outputs(result, title=config.title or Path(config.src).name)
    result.timings["report"] = time.perf_counter() - t0
    result.timings["total"] = time.perf_counter() - t_start
    with open(Path(config.out) / "experiment.json", "w") as fh:
        json.dump({"config": result.config, **_jsonable(result.to_dict())}, fh, indent=1)
    log.info("report written to %s", result.report_html)


# -- helpers --------------------------------------------------------------------------------
def _data_info(config: ExperimentConfig, data: ExperimentData, sides: Sides, n_draws: int) -> dict[str, Any]:
    return {
        "images": len(data.paths),
        "usable": int(sides.usable.sum()),
        "classes": len(np.unique(data.labels[sides.usable])),
        "class_names": data.classes,
        "train_pool": len(sides.pool),
        "test": None if sides.test is None else len(sides.test),
        "protocol": _describe_protocol(config.test_src, config.test_size),
        "n_draws": n_draws,
    }


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


def _versus(baseline: FeatureSpace, main: FeatureSpace) -> str:
    """A baseline as a verdict names it after "the": "same network with random weights".

    Examples
    --------
    >>> from deepfeat.pipelines.experiment_spaces import plan_spaces
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



def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=json_default))
