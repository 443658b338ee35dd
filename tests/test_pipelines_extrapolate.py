"""Power-law extrapolation and intervals: known curves are recovered, limits are said plainly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepfeat.pipelines.extrapolate import UNREACHABLE, PowerLaw, extrapolate, fit_power_law
from deepfeat.pipelines.summary import paired_gain, summarize, t_interval

K = np.array([1.0, 2, 5, 10, 20])


def _noisy(law: PowerLaw, repeats: int, sd: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    k = np.repeat(K, repeats)
    acc = law.accuracy(k) + rng.normal(0, sd, k.size)
    return k, acc, np.tile(np.arange(repeats), K.size)


def test_fit_recovers_a_noiseless_law():
    law = fit_power_law(K, 0.6 * K**-0.5 + 0.1)
    assert law.a == pytest.approx(0.6, abs=1e-3)
    assert law.b == pytest.approx(0.5, abs=1e-3)
    assert law.c == pytest.approx(0.1, abs=1e-3)


def test_labels_needed_and_bootstrap_range_cover_the_truth():
    truth = PowerLaw(0.6, 0.5, 0.05)
    k, acc, rep = _noisy(truth, repeats=5, sd=0.01)
    ex = extrapolate(k, acc, rep, targets=[0.8, 0.9], n_boot=200, seed=0)
    for t in ex.targets:
        need = truth.labels_for(t.target)
        assert t.low <= need <= t.high
        assert t.labels == pytest.approx(need, rel=0.5)
    assert ex.targets[1].status.startswith("extrapolated")  # 0.9 needs 144 labels, 7x the largest k
    assert "labels per class" in ex.targets[0].describe()


def test_target_above_the_ceiling_is_not_reachable():
    k, acc, rep = _noisy(PowerLaw(0.5, 0.8, 0.2), repeats=3, sd=0.005)
    ex = extrapolate(k, acc, rep, targets=[0.95], n_boot=100)
    t = ex.targets[0]
    assert not np.isfinite(t.labels) and t.status == UNREACHABLE
    assert t.p_unreachable > 0.9
    assert UNREACHABLE in t.describe()


def test_single_repeat_gives_no_range_and_says_so():
    k, acc, rep = _noisy(PowerLaw(0.6, 0.5, 0.05), repeats=1, sd=0.0)
    ex = extrapolate(k, acc, rep, targets=[0.8], n_boot=50)
    assert not ex.boot and np.isnan(ex.targets[0].low)
    assert "no bootstrap range" in ex.note


def test_fit_needs_three_k_values():
    with pytest.raises(ValueError, match="three distinct"):
        fit_power_law([1, 1, 2, 2], [0.5, 0.5, 0.4, 0.4])


def test_t_interval_is_clipped_and_undefined_for_one_value():
    m, lo, hi = t_interval(np.array([0.95, 1.0]), bounds=(0, 1))
    assert hi == 1.0 and lo < m
    assert np.isnan(t_interval(np.array([0.5]))[1])
    # Against scipy's reference: mean 0.6, s=0.1, n=3 -> half-width t(0.975, 2)*0.1/sqrt(3)
    _, lo, hi = t_interval(np.array([0.5, 0.6, 0.7]))
    assert (hi - lo) / 2 == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)


def test_paired_gain_uses_per_draw_differences():
    # b is a + 0.05 with large draw-to-draw variation: the paired interval is tight.
    acc_a = np.array([0.3, 0.6, 0.9])
    t = pd.DataFrame(
        {
            "space": ["a"] * 3 + ["b"] * 3,
            "shots": ["5"] * 6,
            "k": [5.0] * 6,
            "repeat": [0, 1, 2] * 2,
            "accuracy": np.r_[acc_a, acc_a + 0.05],
        }
    )
    g = paired_gain(t, "b", "a")
    assert g.gain.iloc[0] == pytest.approx(0.05)
    assert g.ci_low.iloc[0] == pytest.approx(0.05) and g.ci_high.iloc[0] == pytest.approx(0.05)
    s = summarize(t)
    assert (s.ci_high - s.ci_low).min() > 0.5  # unpaired intervals are wide


def _plateau_then(last: float):
    """A noisy power law with a plateau at 80% on five k values, then one draw at k=60."""
    k, acc, rep = _noisy(PowerLaw(0.5, 1.0, 0.2), repeats=3, sd=0.005)
    return np.append(k, 60.0), np.append(acc, last), np.append(rep, 0)


def test_a_fitted_ceiling_below_a_measured_point_is_refused():
    # the case: the repeated small-k draws pull the fitted ceiling to about 82%,
    # while the single draw with every training image measured 86%
    k, acc, rep = _plateau_then(0.86)
    ex = extrapolate(k, acc, rep, targets=[0.85, 0.9], n_boot=100)
    assert 1 - ex.law.c < 0.86  # the fit itself: a ceiling below the best measured point
    assert "ceiling" in ex.refused and "k=60" in ex.refused
    assert all(t.refused for t in ex.targets)
    sentences = [t.describe() for t in ex.targets]
    assert not any("labels per class" in s for s in sentences)  # no count printed
    assert sentences[0].startswith("85% accuracy: reached at k=60 (measured 86.0%)")
    assert sentences[1].startswith("90% accuracy: no estimate")
    assert all(t["labels"] is None for t in ex.to_dict()["targets"])
    # negative control: the same curve with its last point on the law is not refused
    k, acc, rep = _plateau_then(float(PowerLaw(0.5, 1.0, 0.2).accuracy(60.0)))
    ok = extrapolate(k, acc, rep, targets=[0.75], n_boot=100)
    assert ok.refused == "" and not ok.targets[0].refused
    assert "labels per class" in ok.targets[0].describe()


def test_a_target_already_measured_is_said_with_the_measurement():
    truth = PowerLaw(0.6, 0.5, 0.05)
    k, acc, rep = _noisy(truth, repeats=5, sd=0.01)
    ex = extrapolate(k, acc, rep, targets=[0.8, 0.9], n_boot=200, seed=0)
    reached, beyond = ex.targets
    assert ex.refused == ""
    assert reached.measured_k == 20 and "; measured " in reached.describe()
    assert np.isnan(beyond.measured_k) and "; measured " not in beyond.describe()
