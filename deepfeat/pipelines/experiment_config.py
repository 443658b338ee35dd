"""What an experiment measures: one validated, frozen configuration.

:class:`ExperimentConfig` declares every setting of :func:`~deepfeat.pipelines.experiment.run_experiment`
once -- name, type, default and check. ``deepfeat experiment`` builds its options from these
fields (:mod:`deepfeat.cli.experiment_options`), and the report records the configuration as
it ran (``experiment.json``'s ``config``), from which the same configuration can be built again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepfeat.exceptions import InvalidParameterError
from deepfeat.featurize.registry import DEFAULT_BACKBONE
from deepfeat.pipelines.audit import NEAR_DUPLICATE_THRESHOLD, check_threshold
from deepfeat.pipelines.experiment_spaces import PLANNED_BASELINES
from deepfeat.pipelines.extrapolate import check_targets
from deepfeat.pipelines.heads import SEARCHES
from deepfeat.pipelines.pixels import PIXEL_SIZE
from deepfeat.pipelines.sampling import check_test_size, parse_shots
from deepfeat.pipelines.strategies import FROZEN, parse_strategies

__all__ = ["DEFAULT_SHOTS", "DEFAULT_TARGETS", "SELECTIONS", "ExperimentConfig"]

DEFAULT_SHOTS: tuple[int | str, ...] = (1, 2, 5, 10, 20, "all")
DEFAULT_TARGETS: tuple[float, ...] = (0.8, 0.9, 0.95)
#: What ``select`` takes: ``"auto"`` adds the curve of ``deepfeat fit``'s automatic choice.
SELECTIONS = ("none", "auto")


# -- checks: each takes the value given and returns it normalised, or raises ----------------
def _items(value: str | Sequence[Any]) -> list[Any]:
    """A comma-separated string or a sequence, as a list (empty entries dropped)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, Sequence):
        return list(value)
    raise InvalidParameterError(f"expected a comma-separated string or a sequence, got {value!r}")


def _path(value: str | os.PathLike) -> str:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise InvalidParameterError(f"expected a path, got {value!r}")
    return os.fspath(value)


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _integer(minimum: int | None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
                minimum is not None and value < minimum):
            raise InvalidParameterError(
                f"must be an integer{'' if minimum is None else f' >= {minimum}'}, got {value!r}")
        return int(value)
    return check


def _one_of(choices: Sequence[str]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise InvalidParameterError(f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    return check


def _flag(value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(f"must be True or False, got {value!r}")
    return bool(value)


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    names = _items(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise InvalidParameterError(f"give at least one backbone name, got {value!r}")
    return tuple(names)


def _layers(value: str | Sequence[str]) -> str | tuple[str, ...]:
    if value == "auto":
        return "auto"
    names = _items(value)
    if not all(isinstance(n, str) for n in names):
        raise InvalidParameterError(f"give layer names or 'auto', got {value!r}")
    return tuple(names)


def _baselines(value: str | Sequence[str]) -> tuple[str, ...]:
    names = _items(value)
    bad = [n for n in names if n not in PLANNED_BASELINES]
    if bad:
        raise InvalidParameterError(f"each baseline must be one of {', '.join(PLANNED_BASELINES)}, got {bad[0]!r}")
    return tuple(dict.fromkeys(names))


def _options(value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidParameterError(f"must be a mapping of parameter names to values, got {value!r}")
    return dict(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidParameterError(f"must be a non-empty string, got {value!r}")
    return value


def _setting(default: Any = dataclasses.MISSING, check: Callable[[Any], Any] | None = None,
             choices: Sequence[str] | None = None) -> Any:
    """A configuration field: its default and its check (``choices``: the values allowed)."""
    if choices is not None:
        check = _one_of(choices)
    return field(default=default, metadata={"check": check, "choices": choices})


@dataclass(frozen=True)
class ExperimentConfig:
    """The settings of an experiment, checked when built.

    Every value is checked and normalised in ``__post_init__`` (comma-separated strings
    become tuples, paths strings); a bad one raises
    :class:`~deepfeat.exceptions.InvalidParameterError` (a ``ValueError``) naming the field.

    Parameters
    ----------
    src : path-like
        Folder of class subfolders (images or .txt files), or a CSV/parquet manifest.
    out : path-like
        Report folder (created).
    backbones : sequence of str or str
        Backbones compared at their penultimate layer; the first is the main space. Add
        ``[random]`` to a name to measure it with random weights.
    layers : sequence of str or str
        Extra cut points of the first backbone for a layer sweep, or ``"auto"`` (one per stage).
    shots : sequence of int or "all", or str
        Labelled images per class, e.g. ``"1,2,5,10,20,all"``.
    repeats : int
        Random draws per shot value (seeds ``seed .. seed+repeats-1``).
    test_src : path-like, optional
        A separate labelled test set.
    test_size : int or float, optional
        Hold out this many images per class (int) or this fraction of each class (float) with a fixed-seed split.
    cache : path-like, optional
        HDF5 feature cache shared by all spaces (default: ``out/features.h5``).
    drop_leaked : bool
        Drop test images that duplicate a training image. Without a fixed test set, keep one
        image of each duplicate group instead.
    baselines : sequence of {"pixels", "random", "tfidf"} or str
        Raw pixels (TF-IDF for texts) and the first backbone with random weights, measured the same way.
    near_duplicate_threshold : float
        Cosine similarity of main-space embeddings above which images are near duplicates.
    targets : sequence of float or str
        Target accuracies for the power-law extrapolation.
    max_per_class : int, optional
        Subsample each class to at most this many images (fixed seed) to bound the run time.
    pixel_size : int
        Side of the raw-pixel baseline's square.
    seed : int
        Base seed of splits and draws; the same seed gives the same tables.
    search : {"fast", "full"}
        Hyperparameter search inside each training draw: fast (logistic regression, C per
        decade) or full (every head and grid, several times slower).
    select : {"none", "auto"}
        auto: also measure fit's automatic choice of space and head, made inside each training draw.
    strategies : sequence of {"frozen", "finetune"} or str
        frozen, or frozen,finetune: also fine-tune the main backbone inside every training
        draw and compare on the same draws.
    featurizer_options : dict, optional
        Extra :class:`~deepfeat.featurize.Featurizer` arguments (``device``, ``batch_size``...).
    finetune_options : dict, optional
        :class:`~deepfeat.finetune.Recipe` fields (``epochs``, ``lr``, ``freeze``...).
    text_column : str
        Text column of a CSV/parquet source of texts.
    title : str, optional
        Report title (default: the source folder's name).

    Examples
    --------
    >>> cfg = ExperimentConfig("data", "report", shots="5,1,all", baselines="pixels")
    >>> cfg.shots, cfg.baselines, cfg.repeats
    ((1, 5, 'all'), ('pixels',), 3)
    >>> ExperimentConfig("data", "report", repeats=0)
    Traceback (most recent call last):
    ...
    deepfeat.exceptions.InvalidParameterError: repeats must be an integer >= 1, got 0
    """

    src: str = _setting(check=_path)
    out: str = _setting(check=_path)
    backbones: tuple[str, ...] = _setting((DEFAULT_BACKBONE,), _names)
    layers: str | tuple[str, ...] = _setting((), _layers)
    shots: tuple[int | str, ...] = _setting(DEFAULT_SHOTS, lambda v: tuple(parse_shots(v)))
    repeats: int = _setting(3, _integer(1))
    test_src: str | None = _setting(None, _optional(_path))
    test_size: int | float | None = _setting(None, _optional(check_test_size))
    cache: str | None = _setting(None, _optional(_path))
    drop_leaked: bool = _setting(False, _flag)
    baselines: tuple[str, ...] = _setting(("pixels", "random"), _baselines)
    near_duplicate_threshold: float = _setting(NEAR_DUPLICATE_THRESHOLD, check_threshold)
    targets: tuple[float, ...] = _setting(DEFAULT_TARGETS, lambda v: tuple(check_targets(_items(v))))
    max_per_class: int | None = _setting(None, _optional(_integer(1)))
    pixel_size: int = _setting(PIXEL_SIZE, _integer(1))
    seed: int = _setting(0, _integer(None))
    search: str = _setting("fast", choices=SEARCHES)
    select: str = _setting("none", choices=SELECTIONS)
    strategies: tuple[str, ...] = _setting((FROZEN,), parse_strategies)
    featurizer_options: dict[str, Any] = _setting(None, _options)
    finetune_options: dict[str, Any] = _setting(None, _options)
    text_column: str = _setting("text", _text)
    title: str | None = _setting(None, _optional(_text))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, self.check_field(f.name, getattr(self, f.name), named=True))
        if self.test_src is not None and self.test_size is not None:
            raise InvalidParameterError("test_src and test_size: give one of them, not both")

    @classmethod
    def check_field(cls, name: str, value: Any, *, named: bool = False) -> Any:
        """``value`` checked and normalised as the field ``name`` takes it.

        Raises :class:`~deepfeat.exceptions.InvalidParameterError`; with ``named``, its
        message starts with the field's name.
        """
        spec = {f.name: f for f in dataclasses.fields(cls)}.get(name)
        if spec is None:
            raise InvalidParameterError(f"ExperimentConfig has no field {name!r}")
        try:
            return spec.metadata["check"](value)
        except (InvalidParameterError, TypeError, ValueError) as exc:
            msg = str(exc)
            if named and not msg.startswith(name):
                msg = f"{name} {msg}" if msg.startswith("must ") else f"{name}: {msg}"
            raise InvalidParameterError(msg) from None

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON holds them; ``ExperimentConfig(**d)`` builds the same config.

        Examples
        --------
        >>> cfg = ExperimentConfig("data", "report", shots="1,all")
        >>> d = cfg.to_dict()
        >>> d["shots"], ExperimentConfig(**d) == cfg
        (['1', 'all'], True)
        """
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = [str(s) for s in v] if k == "shots" else list(v)
            elif isinstance(v, dict):
                d[k] = dict(v)
        return d
