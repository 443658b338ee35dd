"""Argument types for the command line, built from the library's own checks.

Each function here is an argparse ``type=``: it runs at parse time, so a bad value stops
the command before any image is read or featurized, and it defers to the library's own
validator or list of allowed values (one source of truth). A value the library rejects
with :class:`~deepfeat.exceptions.InvalidParameterError` becomes argparse's usage error:
one line naming the option, what it allows and what it got, exit code 2
(see :mod:`deepfeat.cli.main`).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from deepfeat.exceptions import InvalidParameterError

__all__ = [
    "backbone_name",
    "checked",
    "comma_choices",
    "device",
    "field",
    "integer",
    "number",
    "numbers",
    "scorer",
    "workers",
]


def checked(func: Callable[[str], Any], name: str | None = None) -> Callable[[str], Any]:
    """Wrap a library validator as an argparse type (its error becomes a usage error)."""

    def parse(value: str) -> Any:
        try:
            return func(value)
        except InvalidParameterError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name or getattr(func, "__name__", "value")
    return parse


def field(
    cls: type, name: str, convert: Callable[[str], Any], to_field: Callable[[Any], Any] | None = None
) -> Callable[[str], Any]:
    """A value of the field ``name`` of the validated dataclass ``cls``, checked by ``cls`` itself.

    The option's value is converted (``convert``: ``int``, ``float``, ``str``), then the
    dataclass is built with that one field (``to_field`` maps the option's unit to the field's,
    e.g. MiB to bytes) and every other at its default: its ``__post_init__`` judges it, so
    the command line and the library accept the same values.
    """
    base = {int: _int, float: _float}.get(convert, convert)

    def parse(value: str) -> Any:
        x = base(value)
        try:
            cls(**{name: to_field(x) if to_field is not None else x})
        except InvalidParameterError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return x

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None


def integer(
    minimum: int | None = None, maximum: int | None = None, *, nonzero: bool = False
) -> Callable[[str], int]:
    """An integer ``>= minimum`` and ``<= maximum`` (and not 0 when ``nonzero``)."""

    def parse(value: str) -> int:
        n = _int(value)
        if minimum is not None and maximum is not None and not minimum <= n <= maximum:
            raise argparse.ArgumentTypeError(
                f"must be an integer in [{minimum}, {maximum}], got {value!r}"
            )
        if minimum is not None and n < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value!r}")
        if maximum is not None and n > maximum:
            raise argparse.ArgumentTypeError(f"must be an integer <= {maximum}, got {value!r}")
        if nonzero and n == 0:
            raise argparse.ArgumentTypeError(f"must be a non-zero integer, got {value!r}")
        return n

    parse.__name__ = "integer"
    return parse


def _in_range(x: float, low: float | None, high: float | None, closed: str) -> bool:
    lo_ok = low is None or (x >= low if closed in ("both", "low") else x > low)
    hi_ok = high is None or (x <= high if closed in ("both", "high") else x < high)
    return lo_ok and hi_ok and x == x  # NaN is never in range


def _range_text(low: float | None, high: float | None, closed: str) -> str:
    if high is None:
        return f">= {low}" if closed in ("both", "low") else f"> {low}"
    left = "[" if closed in ("both", "low") else "("
    right = "]" if closed in ("both", "high") else ")"
    return f"in {left}{low}, {high}{right}"


def number(
    low: float | None = None, high: float | None = None, closed: str = "both"
) -> Callable[[str], float]:
    """A finite number within ``low``/``high``; ``closed`` is "both", "low", "high" or "neither"."""

    def parse(value: str) -> float:
        x = _float(value)
        if not _in_range(x, low, high, closed) or x in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(
                f"must be a number {_range_text(low, high, closed)}, got {value!r}"
            )
        return x

    parse.__name__ = "number"
    return parse


def numbers(
    low: float | None = None, high: float | None = None, closed: str = "both"
) -> Callable[[str], list[float]]:
    """Comma-separated numbers, each within ``low``/``high`` (at least one)."""
    one = number(low, high, closed)

    def parse(value: str) -> list[float]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}")
        try:
            return [one(v) for v in items]
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"each entry {exc}") from None

    parse.__name__ = "numbers"
    return parse


def comma_choices(
    allowed: Sequence[str], aliases: dict[str, Sequence[str]] | None = None
) -> Callable[[str], list[str]]:
    """Comma-separated names among ``allowed``; ``aliases`` maps a whole value to a list."""
    aliases = aliases or {}

    def parse(value: str) -> list[str]:
        if value.strip().lower() in aliases:
            return list(aliases[value.strip().lower()])
        names = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in names if v not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"choose from {', '.join([*allowed, *aliases])} (comma-separated), got {value!r}"
            )
        return list(dict.fromkeys(names))

    parse.__name__ = "names"
    return parse


def workers(value: str) -> int | str:
    """``auto`` or an integer >= 0 (decoding processes), as the Featurizer allows."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 'auto' or an integer >= 0, got {value!r}")
    return n


def device(value: str) -> str:
    """A device the library can resolve here (``auto``, ``cpu``, ``cuda[:N]``, ``mps``)."""
    from deepfeat.featurize.runtime import resolve_runtime

    checked(lambda v: resolve_runtime(v, "fp32"))(value)
    return value


def backbone_name(value: str, suffix: str = "") -> str:
    """A registered backbone name (an optional ``suffix`` such as ``[random]`` is allowed)."""
    from deepfeat.featurize.backbones import resolve_backbone

    name = value[: -len(suffix)] if suffix and value.endswith(suffix) else value
    # Random weights: checks the name only (no weights looked up, works offline).
    checked(lambda v: resolve_backbone(v, weights=None))(name)
    return value


def _scorer_names() -> Iterable[str]:
    from sklearn.metrics import get_scorer_names

    return get_scorer_names()


def scorer(value: str) -> str:
    """A scikit-learn scorer name, e.g. ``accuracy``, ``balanced_accuracy``, ``f1_macro``."""
    names = list(_scorer_names())
    if value not in names:
        close = difflib.get_close_matches(value, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise argparse.ArgumentTypeError(
            f"unknown scorer {value!r}{hint} (e.g. accuracy, balanced_accuracy, f1_macro; "
            f"sklearn.metrics.get_scorer_names() lists all)"
        )
    return value
