"""The speed-up instrument's statistics against hand computations, closed forms and simulation."""

import math

import numpy as np
import pytest
from scipy.stats import ttest_1samp

from diffusion_curriculum.experiments import stats


def test_steps_to_target_interpolates_on_a_log_scale():
    # best 0.6 at step 200, 0.2 at 400: the target 0.4 closes half the gap -> 200 * 2 ** 0.5
    curve = ([100, 200, 400, 800], [1.0, 0.6, 0.2, 0.1])
    assert stats.steps_to_target(curve, 0.4, True) == pytest.approx(200 * math.sqrt(2), abs=1e-9)
    # a quarter of the gap: 200 * 2 ** 0.25; higher is better mirrors it
    assert stats.steps_to_target(curve, 0.5, True) == pytest.approx(200 * 2**0.25, abs=1e-9)
    up = ([100, 200, 400], [0.0, 0.4, 0.8])
    assert stats.steps_to_target(up, 0.6, False) == pytest.approx(200 * math.sqrt(2), abs=1e-9)
    # reached at the first evaluation: that step; never reached: None
    assert stats.steps_to_target(curve, 2.0, True) == 100.0
    assert stats.steps_to_target(curve, 0.05, True) is None


def test_steps_to_target_uses_the_running_best():
    # the curve crosses at 300, bounces back above the target, and the later dip does not count
    noisy = ([100, 200, 300, 400, 500], [1.0, 0.8, 0.3, 0.9, 0.25])
    assert stats.steps_to_target(noisy, 0.5, True) == pytest.approx(200 * 1.5 ** ((0.8 - 0.5) / 0.5), abs=1e-9)
    assert stats.running_best([None, 3.0, 1.0, 2.0, float("nan")], True) == [None, 3.0, 1.0, 1.0, 1.0]


def _curves(scale: float, seeds=range(6), budget=1000, noise=0.0):
    """Loss curves 1 / (1 + step / (100 * scale)): a method with scale s needs s times the steps."""
    rng = np.random.default_rng(0)
    steps = list(range(20, budget + 1, 20))
    return {
        s: (steps, [1.0 / (1.0 + st / (100 * scale)) * (1 + noise * rng.standard_normal()) for st in steps])
        for s in seeds
    }


def test_speedup_of_a_known_ratio_and_a_slower_method():
    base = _curves(1.0)
    faster = stats.speedup_to_target(base, _curves(0.5), True, budget=1000)
    slower = stats.speedup_to_target(base, _curves(1.25), True, budget=1000)
    # the target is the baseline's value at step 500; interpolation is exact up to the curve's shape
    assert faster["target"] == pytest.approx(1 / 6)
    assert faster["speedup"] == pytest.approx(2.0, rel=0.02)
    assert slower["speedup"] == pytest.approx(0.8, rel=0.02) and slower["speedup"] < 1
    assert faster["censored"] == slower["censored"] == 0 and faster["n"] == 6


def test_a_seed_that_never_reaches_the_target_is_censored_not_dropped():
    base = _curves(1.0)
    never = {s: (c[0], [1.0] * len(c[0])) for s, c in _curves(1.0).items()}
    out = stats.speedup_to_target(base, never, True, budget=1000)
    assert out["n"] == 6 and out["reached"] == 0 and out["censored"] == 6
    assert all(r["steps"] is None for r in out["pairs"])
    # counted at the budget: the bound baseline steps / budget
    bound = np.mean([math.log(r["baseline_steps"] / 1000) for r in out["pairs"]])
    assert out["speedup"] == pytest.approx(math.exp(bound))


def test_bootstrap_interval_covers_a_known_ratio_95_percent_of_the_time():
    """1,000 synthetic grids of 8 paired seeds with a true speed-up of 1.5 (log-normal ratios)."""
    rng = np.random.default_rng(12345)
    truth = math.log(1.5)
    covered = 0
    for i in range(1000):
        ci = stats.bootstrap_mean_ci(rng.normal(truth, 0.3, 8), resamples=2000, seed=i)
        covered += ci[0] <= truth <= ci[1]
    assert 930 <= covered <= 970, covered


def test_holm_against_a_hand_computed_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> monotone 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, None, 0.6]) == [pytest.approx(1.0), None, pytest.approx(1.0)]


def test_no_p_value_below_five_seeds():
    assert stats.paired_tests([0.1, 0.2, 0.3, 0.4]) == {"wilcoxon_p": None, "t_p": None}
    five = stats.paired_tests([0.1, 0.2, 0.3, 0.4, 0.5])
    assert five["wilcoxon_p"] == pytest.approx(0.0625) and five["t_p"] == pytest.approx(
        ttest_1samp([0.1, 0.2, 0.3, 0.4, 0.5], 0).pvalue
    )
    out = stats.speedup_to_target(_curves(1.0, seeds=range(4)), _curves(0.5, seeds=range(4)), True, budget=1000)
    assert out["wilcoxon_p"] is None and out["t_p"] is None


def test_min_detectable_speedup_has_the_stated_power():
    """At the returned speed-up, a paired t-test on log steps rejects about 80% of the time."""
    sd, n = 0.25, 8
    baseline = np.random.default_rng(1).normal(0, sd, 400)  # a large sample: its sd is about sd
    mds = stats.min_detectable_speedup(baseline, n)
    rng = np.random.default_rng(2)
    diffs = rng.normal(math.log(mds), math.sqrt(2) * float(np.std(baseline, ddof=1)), (4000, n))
    power = np.mean(ttest_1samp(diffs, 0, axis=1).pvalue < 0.05)
    assert 0.75 <= power <= 0.85, power
    assert stats.min_detectable_speedup([0.1], 8) is None


def test_metric_at_equal_steps():
    base = {s: ([100, 200], [1.0, 0.5]) for s in range(5)}
    method = {s: ([100, 200], [0.9, 0.5 - 0.01 * s]) for s in range(5)}
    out = stats.metric_at_step(base, method, 150)
    assert out["diff"] == pytest.approx(np.mean([(0.9 + 0.5 - 0.01 * s) / 2 - 0.75 for s in range(5)]))
    assert out["n"] == 5 and out["wilcoxon_p"] is not None
