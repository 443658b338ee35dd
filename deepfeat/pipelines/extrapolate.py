"""Power-law extrapolation of a learning curve: how many labels per class reach a target?

The error rate at k labelled images per class is modelled as ``err(k) = a · k^(-b) + c``
(``a >= 0``, ``b > 0``; ``c`` in [0, 1] is the error the model predicts with unlimited
labels). It is fitted by least squares to every draw. Its uncertainty comes from a
bootstrap over repeats: at each k the repeats are resampled with replacement, the curve
is refitted, and the labels needed for each target accuracy are recomputed. A target at
or above the fitted ceiling ``1 - c`` is "not reachable within the fitted model". Such
extrapolations are rough -- three to six points of a noisy curve -- and reports say so.

A fit that contradicts the measurements is refused (:attr:`Extrapolation.refused` says why
and no label count is reported): when a measured mean accuracy lies above the fitted
ceiling, or outside the fitted curve's bootstrap band, by more than that mean's own noise
(1.96 standard errors, from the spread of the repeats). A target that a measured mean
already reaches is answered with that measurement first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from deepfeat.exceptions import InvalidParameterError
from deepfeat.process_state import ignoring_warnings

__all__ = [
    "PowerLaw",
    "TargetEstimate",
    "Extrapolation",
    "PowerLawFitError",
    "BOOTSTRAP_METHOD",
    "check_against_measurements",
    "check_targets",
    "fit_power_law",
    "extrapolate",
]

log = logging.getLogger(__name__)

BOOTSTRAP_METHOD = "bootstrap over repeats (resampled within each k), 95% percentile range"
UNREACHABLE = "not reachable within the fitted model"
#: Beyond this multiple of the largest k measured, a label count is not reported.
MEANINGFUL_RATIO = 100
_BOUNDS = ([0.0, 0.01, 0.0], [10.0, 3.0, 1.0])
#: A fitted error floor this small is the fit's lower bound (0), not a measured ceiling.
_NO_CEILING = 1e-6


class PowerLawFitError(RuntimeError):
    """The power law could not be fitted to a curve (the optimiser did not converge)."""


def check_targets(targets: Sequence[float]) -> list[float]:
    """Validate target accuracies: at least one, each a number in (0, 1).

    Examples
    --------
    >>> check_targets([0.8, 0.9])
    [0.8, 0.9]
    """
    try:
        values = [float(t) for t in targets]
    except (TypeError, ValueError):
        values = []
    if not values or not all(0.0 < t < 1.0 for t in values):
        raise InvalidParameterError(
            f"targets must be accuracies in (0, 1), e.g. 0.8,0.9, got {targets!r}"
        )
    return values


def _law(k: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a * np.power(k, -b) + c


@dataclass(frozen=True)
class PowerLaw:
    """A fitted ``err(k) = a · k^(-b) + c``."""

    a: float
    b: float
    c: float

    def ceiling_text(self) -> str:
        """``1 - c`` as a percentage, or ``"none seen"`` when the fit put ``c`` at its bound 0.

        Examples
        --------
        >>> PowerLaw(a=0.5, b=1.0, c=0.05).ceiling_text(), PowerLaw(a=0.5, b=1.0, c=0.0).ceiling_text()
        ('95.0%', 'none seen')
        """
        return "none seen" if self.c <= _NO_CEILING else f"{1 - self.c:.1%}"

    def accuracy(self, k: np.ndarray | float) -> np.ndarray:
        """Predicted accuracy ``1 - err(k)``."""
        return 1.0 - _law(np.asarray(k, dtype=float), self.a, self.b, self.c)

    def labels_for(self, target: float) -> float:
        """Labels per class for accuracy ``target``; ``inf`` when at or above ``1 - c``.

        Examples
        --------
        >>> round(PowerLaw(a=0.5, b=1.0, c=0.0).labels_for(0.9), 6)
        5.0
        >>> PowerLaw(a=0.5, b=1.0, c=0.2).labels_for(0.9)
        inf
        """
        gap = (1.0 - target) - self.c
        if gap <= 0 or self.a <= 0:
            return float("inf")
        return float((self.a / gap) ** (1.0 / self.b))


def fit_power_law(k: Sequence[float], err: Sequence[float]) -> PowerLaw:
    """Least-squares fit of ``err = a · k^(-b) + c`` with bounded parameters.

    Raises
    ------
    ValueError
        With fewer than three distinct k values (three parameters need three points).
    PowerLawFitError
        When the optimiser does not converge (or the errors are not finite).

    Examples
    --------
    >>> k = np.array([1, 2, 4, 8, 16.0])
    >>> law = fit_power_law(k, 0.6 * k ** -0.7 + 0.05)
    >>> round(law.b, 2), round(law.c, 2)
    (0.7, 0.05)
    """
    k = np.asarray(k, dtype=float)
    err = np.asarray(err, dtype=float)
    if np.unique(k).size < 3:
        raise ValueError("a power-law fit needs at least three distinct k values")
    c0 = max(0.0, float(err.min()) * 0.5)
    a0 = float(np.clip(err[k == k.min()].mean() - c0, 1e-3, 10.0))
    with ignoring_warnings(OptimizeWarning):
        try:
            params, _ = curve_fit(_law, k, err, p0=[a0, 0.5, c0], bounds=_BOUNDS, maxfev=5000)
        except (RuntimeError, ValueError) as exc:  # no convergence; NaN or inf in err
            raise PowerLawFitError(f"the least-squares fit failed ({exc})") from exc
    return PowerLaw(*map(float, params))


@dataclass(frozen=True)
class TargetEstimate:
    """Labels per class needed for one target accuracy.

    ``labels`` is the point estimate (``inf`` when unreachable), ``low``/``high`` the
    bootstrap range (``inf`` high when some bootstrap fits never reach the target),
    ``p_unreachable`` the share of bootstrap fits that never reach it, and ``status`` a
    phrase for reports.
    """

    target: float
    labels: float
    low: float
    high: float
    p_unreachable: float
    status: str
    k_max: float = float("nan")
    #: Why no count is given (the fit contradicts the measurements); "" when it is given.
    refused: str = ""
    #: The smallest k whose measured mean accuracy reaches the target, and that mean.
    measured_k: float = float("nan")
    measured_accuracy: float = float("nan")

    def format_labels(self, value: float) -> str:
        """A label count for reports: ``"not reachable"``, ``"> N"`` past the meaningful
        range (``MEANINGFUL_RATIO`` times the largest k measured), else the rounded count.

        Examples
        --------
        >>> t = TargetEstimate(0.9, 12.3, 9.0, 2e6, 0.0, "", k_max=20.0)
        >>> t.format_labels(t.labels), t.format_labels(t.high)
        ('12', '> 2,000')
        """
        if not np.isfinite(value):
            return "not reachable"
        limit = MEANINGFUL_RATIO * self.k_max
        if np.isfinite(limit) and value > limit:
            return f"> {limit:,.0f}"
        return f"{value:,.0f}"

    def describe(self) -> str:
        """One honest sentence for reports.

        Examples
        --------
        >>> TargetEstimate(0.9, 12.3, 9.0, 20.0, 0.0, "within the measured range", k_max=20.0,
        ...                measured_k=20.0, measured_accuracy=0.91).describe()
        '90% accuracy: about 12 labels per class (bootstrap range 9–20); within the measured range; measured 91.0% at k=20.'
        >>> TargetEstimate(0.9, 300.0, 90.0, 900.0, 0.0, "", k_max=20.0,
        ...                refused="the fit is below the measurements").describe()
        '90% accuracy: no estimate (the fit is below the measurements).'
        """
        pct = f"{self.target:.0%}"
        if self.refused:
            if np.isfinite(self.measured_k):
                return (
                    f"{pct} accuracy: reached at k={self.measured_k:g} (measured "
                    f"{self.measured_accuracy:.1%}); no extrapolation ({self.refused})."
                )
            return f"{pct} accuracy: no estimate ({self.refused})."
        if not np.isfinite(self.labels):
            tail = (
                f" (in {1 - self.p_unreachable:.0%} of bootstrap refits it is reachable)"
                if self.p_unreachable < 1
                else ""
            )
            return f"{pct} accuracy: {UNREACHABLE}{tail}."
        rng = ""
        if np.isfinite(self.low):
            rng = (
                f" (bootstrap range {self.format_labels(self.low)}–{self.format_labels(self.high)})"
            )
        count = self.format_labels(self.labels)
        about = (
            f"{count} labels per class"
            if count.startswith(">")
            else f"about {count} labels per class"
        )
        seen = (
            f"; measured {self.measured_accuracy:.1%} at k={self.measured_k:g}"
            if np.isfinite(self.measured_k)
            else ""
        )
        return f"{pct} accuracy: {about}{rng}; {self.status}{seen}."


@dataclass
class Extrapolation:
    """A learning curve's power-law fit, its bootstrap refits and target estimates."""

    law: PowerLaw
    k_measured: np.ndarray
    boot: list[PowerLaw] = field(repr=False)
    targets: list[TargetEstimate]
    note: str = ""
    #: Why the fit is refused (it contradicts the measurements); "" when it is not.
    refused: str = ""

    def band(self, k: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Percentile band of the predicted accuracy over bootstrap refits at ``k``."""
        if not self.boot:
            acc = self.law.accuracy(k)
            return acc, acc
        preds = np.stack([b.accuracy(k) for b in self.boot])
        q = (1 - level) / 2
        return np.quantile(preds, q, axis=0), np.quantile(preds, 1 - q, axis=0)

    def to_dict(self) -> dict:
        """A JSON-able summary."""
        return {
            "a": self.law.a,
            "b": self.law.b,
            "c": self.law.c,
            "ceiling_accuracy": 1 - self.law.c,
            "bootstrap_fits": len(self.boot),
            "note": self.note,
            "refused": self.refused or None,
            "targets": [
                {k: _finite(v) for k, v in t.__dict__.items()}
                | ({"labels": None, "low": None, "high": None} if t.refused else {})
                | {"sentence": t.describe()}
                for t in self.targets
            ],
        }


def _finite(value: object) -> object:
    """JSON has no infinity: an unreachable count becomes ``None`` (the sentence says why)."""
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _status(labels: float, k_max: float) -> str:
    if not np.isfinite(labels):
        return UNREACHABLE
    if labels <= k_max:
        return "within the measured range"
    ratio = labels / k_max
    if ratio > MEANINGFUL_RATIO:
        return f"more than {MEANINGFUL_RATIO}× the largest k measured: no meaningful estimate"
    if ratio > 10:
        return f"far extrapolation ({ratio:,.0f}× the largest k measured): a rough guess"
    return f"extrapolated {ratio:.1f}× beyond the largest k measured"


def _fmt_k(k: float) -> str:
    return f"{k:g}"


def check_against_measurements(
    law: PowerLaw,
    boot: Sequence[PowerLaw],
    levels: np.ndarray,
    means: np.ndarray,
    margins: np.ndarray,
) -> str:
    """Why the fitted ``law`` contradicts the measured means, or ``""`` when it does not.

    A mean contradicts the fit when it lies above the fitted ceiling ``1 - c``, or outside
    the fitted curve's 95% bootstrap band at its k (the curve itself without bootstrap
    refits), by more than its ``margin`` (its own noise).

    Examples
    --------
    >>> law = PowerLaw(a=0.5, b=1.0, c=0.2)  # ceiling 80%
    >>> check_against_measurements(law, [], np.array([1.0, 10]), np.array([0.3, 0.85]),
    ...                            np.array([0.01, 0.01]))
    'the fitted ceiling 80.0% lies below the 85.0% measured at k=10'
    >>> check_against_measurements(law, [], np.array([1.0, 10]), np.array([0.3, 0.75]),
    ...                            np.array([0.01, 0.01]))
    ''
    """
    ceiling = 1.0 - law.c
    above = np.flatnonzero(means - margins > ceiling)
    if above.size:
        i = above[np.argmax(means[above])]
        return (
            f"the fitted ceiling {ceiling:.1%} lies below the {means[i]:.1%} measured at "
            f"k={_fmt_k(levels[i])}"
        )
    if boot:
        preds = np.stack([b.accuracy(levels) for b in boot])
        lo, hi = np.quantile(preds, 0.025, axis=0), np.quantile(preds, 0.975, axis=0)
    else:
        lo = hi = law.accuracy(levels)
    outside = np.flatnonzero((means + margins < lo) | (means - margins > hi))
    if outside.size:
        i = outside[np.argmax(np.maximum(lo - means, means - hi)[outside])]
        where = (
            f"outside the fitted curve's bootstrap band ({lo[i]:.1%}–{hi[i]:.1%})"
            if boot
            else f"off the fitted curve ({lo[i]:.1%})"
        )
        return f"the {means[i]:.1%} measured at k={_fmt_k(levels[i])} lies {where}"
    return ""


def _noise_margins(acc: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """1.96 standard errors of each level's mean, from the pooled spread of the repeats.

    A level with a single draw (``k=all``) gets one draw's spread; with no repeats at
    all the margins are 0 (nothing to tell noise by).
    """
    dev = [acc[g] - acc[g].mean() for g in groups]
    dof = sum(len(g) - 1 for g in groups)
    sd = float(np.sqrt(sum(float((d**2).sum()) for d in dev) / dof)) if dof else 0.0
    return np.array([1.96 * sd / np.sqrt(len(g)) for g in groups])


def extrapolate(
    k: Sequence[float],
    accuracy: Sequence[float],
    repeat: Sequence[int],
    *,
    targets: Sequence[float] = (0.8, 0.9, 0.95),
    n_boot: int = 500,
    seed: int = 0,
) -> Extrapolation:
    """Fit the power law to per-draw accuracies and estimate labels needed per target.

    Parameters
    ----------
    k : sequence of float
        Labels per class of each draw.
    accuracy : sequence of float
        Held-out accuracy of each draw.
    repeat : sequence of int
        Repeat number of each draw (the bootstrap resamples repeats within each k).
    targets : sequence of float
        Target accuracies.
    n_boot : int
        Bootstrap refits (none with a single repeat per k).
    seed : int
        Seeds the bootstrap.

    Returns
    -------
    Extrapolation

    Examples
    --------
    >>> ks = np.repeat([1.0, 2, 5, 10, 20], 3)
    >>> rng = np.random.default_rng(0)
    >>> acc = 1 - (0.5 * ks ** -0.6 + 0.05) + rng.normal(0, 0.01, ks.size)
    >>> ex = extrapolate(ks, acc, np.tile([0, 1, 2], 5), targets=[0.9, 0.99], n_boot=50)
    >>> ex.targets[1].status
    'not reachable within the fitted model'
    """
    k = np.asarray(k, dtype=float)
    err = 1.0 - np.asarray(accuracy, dtype=float)
    law = fit_power_law(k, err)
    levels = np.unique(k)
    groups = [np.flatnonzero(k == lv) for lv in levels]
    note = ""
    if levels.size == 3:
        note = "only three k values: the three-parameter fit passes through their means exactly"
    boot: list[PowerLaw] = []
    if max(len(g) for g in groups) >= 2:
        rng = np.random.default_rng(seed)
        failed = 0
        for _ in range(n_boot):
            idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
            try:
                boot.append(fit_power_law(k[idx], err[idx]))
            except (RuntimeError, ValueError):
                failed += 1
        if failed:
            log.info("power-law bootstrap: %d of %d refits did not converge", failed, n_boot)
    else:
        note = (note + "; " if note else "") + "a single repeat per k: no bootstrap range"
    k_max = float(levels.max())
    acc = 1.0 - err
    means = np.array([acc[g].mean() for g in groups])
    margins = _noise_margins(acc, groups)
    refused = check_against_measurements(law, boot, levels, means, margins)
    if refused:
        log.info("power-law extrapolation refused: %s", refused)
    estimates = []
    for target in targets:
        reached = np.flatnonzero(means >= target)
        k_reached = float(levels[reached[0]]) if reached.size else float("nan")
        labels = law.labels_for(target)
        if boot:
            need = np.array([b.labels_for(target) for b in boot])
            p_unreach = float(np.mean(~np.isfinite(need)))
            low, high = (float(v) for v in np.quantile(need, [0.025, 0.975], method="inverted_cdf"))
        else:
            p_unreach, low, high = float(not np.isfinite(labels)), float("nan"), float("nan")
        why = refused
        clearly = np.flatnonzero(means - margins >= target)  # reached beyond the noise
        if not why and clearly.size:
            i = clearly[0]
            if not np.isfinite(labels) or low > levels[i]:
                # measured at levels[i], yet the fit (and its bootstrap range) needs more
                why = (
                    f"the fit needs more than the k={levels[i]:g} at which "
                    f"{means[i]:.1%} was measured"
                    if np.isfinite(labels)
                    else f"the fitted ceiling {1 - law.c:.1%} lies below the "
                    f"{means[i]:.1%} measured at k={levels[i]:g}"
                )
        estimates.append(
            TargetEstimate(
                target=float(target),
                labels=labels,
                low=low,
                high=high,
                p_unreachable=p_unreach,
                status=_status(labels, k_max),
                k_max=k_max,
                refused=why,
                measured_k=k_reached,
                measured_accuracy=float(means[reached[0]]) if reached.size else float("nan"),
            )
        )
    return Extrapolation(
        law=law, k_measured=levels, boot=boot, targets=estimates, note=note, refused=refused
    )
