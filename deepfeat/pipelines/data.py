"""The labelled images of an experiment: one source, or a training and a test source."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepfeat.exceptions import InputError
from deepfeat.featurize.inputs import load_labeled
from deepfeat.pipelines.sampling import class_permutation

__all__ = ["ExperimentData", "load_experiment_data"]


@dataclass
class ExperimentData:
    """Images, labels and sides of an experiment.

    Attributes
    ----------
    paths : list of str
    labels : numpy.ndarray of str
    split : numpy.ndarray of object
        ``"train"`` for images of the main source, ``"test"`` for the test source.
    skipped : list of dict
        Files of either source that were not taken as images (``path, reason``).
    classes : list of str
    notes : list of str
        What loading left out or subsampled.
    """

    paths: list[str]
    labels: np.ndarray
    split: np.ndarray
    skipped: list[dict[str, Any]]
    classes: list[str]
    notes: list[str] = field(default_factory=list)


def _subsample(labels: np.ndarray, max_per_class: int, seed: int) -> np.ndarray:
    pool = np.arange(len(labels))
    keep = [
        class_permutation(labels, pool, c, seed + 104729)[:max_per_class] for c in np.unique(labels)
    ]
    return np.sort(np.concatenate(keep))


def _load(src: str | os.PathLike, text_col: str | None) -> Any:
    """A labelled source as ``.paths, .labels, .skipped``: images, or (``text_col``) texts,
    whose "paths" are the texts themselves and whose skipped rows are those not read."""
    if text_col is None:
        return load_labeled(src)
    from types import SimpleNamespace

    from deepfeat.featurize.text_sources import read_texts

    tds = read_texts(src, text_col=text_col, labeled=True)
    skipped = [{"path": f"{os.fspath(src)}: {f['row']}", "reason": f["reason"]} for f in tds.failed]
    return SimpleNamespace(paths=tds.texts, labels=tds.labels, skipped=skipped)


def load_experiment_data(
    src: str | os.PathLike,
    test_src: str | os.PathLike | None = None,
    *,
    max_per_class: int | None = None,
    seed: int = 0,
    text_col: str | None = None,
) -> ExperimentData:
    """Load the labelled images of an experiment (and of its test source, when given).

    Test images of classes absent from ``src`` are left out; ``max_per_class`` subsamples
    each class of each source with a fixed seed. Both are recorded in ``notes``. With
    ``text_col``, the sources hold texts (:func:`~deepfeat.featurize.text_sources.read_texts`)
    and ``paths`` are the texts.

    Raises
    ------
    InputError
        When a source is unusable or holds fewer than two classes.
    """
    notes: list[str] = []
    ds = _load(src, text_col)
    parts = [(ds, "train")]
    if test_src is not None:
        tds = _load(test_src, text_col)
        unknown = sorted(set(tds.labels) - set(ds.labels))
        if unknown:
            notes.append(
                f"test classes absent from the training source were left out: {', '.join(unknown)}"
            )
        parts.append((tds, "test"))
    paths, labels, split, skipped = [], [], [], []
    for d, side in parts:
        lab = np.asarray(d.labels, dtype=str)
        keep = np.arange(len(lab)) if side == "train" else np.flatnonzero(np.isin(lab, ds.labels))
        if max_per_class:
            sub = _subsample(lab[keep], max_per_class, seed)
            if len(sub) < len(keep):
                notes.append(
                    f"{side} source subsampled to at most {max_per_class} images per class "
                    f"(fixed seed): {len(sub)} of {len(keep)} images"
                )
            keep = keep[sub]
        paths += [d.paths[i] for i in keep]
        labels += [str(lab[i]) for i in keep]
        split += [side] * len(keep)
        skipped += d.skipped
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise InputError(f"{src}: an experiment needs at least two classes, found {classes}")
    return ExperimentData(
        paths, np.asarray(labels), np.asarray(split, dtype=object), skipped, classes, notes
    )
