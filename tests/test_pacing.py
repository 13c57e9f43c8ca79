"""Pacing rules on scripted loss sequences."""

import itertools

import pytest

from diffusion_curriculum import AdaptivePacing, FixedPacing, FunctionPacing, pacing_fraction


def _first_advance(pacing, losses, stage=1, n_stages=5):
    for i, loss in enumerate(losses, start=1):
        if pacing.update(loss, stage, n_stages):
            return i
    return None


@pytest.mark.parametrize("patience", [1, 2, 3, 7])
def test_adaptive_advances_exactly_after_patience_non_improving_steps(patience):
    # improves for 4 steps, then plateaus at 0.6 forever
    losses = [1.0, 0.9, 0.8, 0.6] + [0.6] * 20
    assert _first_advance(AdaptivePacing(patience), losses) == 4 + patience


def test_adaptive_counter_clears_on_improvement():
    # two bad steps, then an improvement, then three bad steps: patience 3 fires at step 7
    losses = [1.0, 1.1, 1.2, 0.5, 0.7, 0.6, 0.55]
    assert _first_advance(AdaptivePacing(3), losses) == 7
    assert _first_advance(AdaptivePacing(4), losses) is None


def test_min_delta_turns_small_gains_into_plateau():
    losses = [1.0, 0.99, 0.98, 0.97, 0.96]
    assert _first_advance(AdaptivePacing(2, min_delta=0.0), losses) is None
    assert _first_advance(AdaptivePacing(2, min_delta=0.05), losses) == 3


def test_ema_smooths_before_comparing():
    pacing = AdaptivePacing(100, ema=0.5)
    pacing.update(1.0, 1, 2)
    pacing.update(0.0, 1, 2)
    assert pacing.smoothed == pytest.approx(0.5)
    pacing.update(0.0, 1, 2)
    assert pacing.smoothed == pytest.approx(0.25)


def test_max_steps_per_stage_forces_advance():
    losses = [1.0 / (i + 1) for i in range(10)]  # always improving
    assert _first_advance(AdaptivePacing(3, max_steps_per_stage=6), losses) == 6


def test_reset_clears_best_counter_and_ema():
    pacing = AdaptivePacing(2, ema=0.9)
    for loss in [1.0, 1.0, 1.0]:
        pacing.update(loss, 1, 3)
    pacing.reset()
    assert (pacing.best, pacing.smoothed, pacing.bad_steps, pacing.steps_in_stage) == (
        None,
        None,
        0,
        0,
    )
    # a higher loss level after the reset is the new best, not a non-improvement
    assert pacing.update(5.0, 2, 3) is False and pacing.best == 5.0


def test_non_finite_loss_is_neither_progress_nor_plateau():
    pacing = AdaptivePacing(2)
    assert _first_advance(pacing, [1.0, float("nan"), float("inf"), float("nan")]) is None
    assert pacing.bad_steps == 0


def test_state_dict_round_trip():
    a = AdaptivePacing(3, ema=0.9)
    for loss in [1.0, 0.8, 0.9]:
        a.update(loss, 1, 3)
    b = AdaptivePacing(3, ema=0.9)
    b.load_state_dict(a.state_dict())
    seq = [0.95, 0.97, 0.99, 1.0]
    assert [a.update(x, 1, 3) for x in seq] == [b.update(x, 1, 3) for x in seq]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patience": 0},
        {"patience": -1},
        {"patience": 1.5},
        {"patience": 2, "min_delta": -1},
        {"patience": 2, "ema": 1.0},
        {"patience": 2, "max_steps_per_stage": 0},
    ],
)
def test_adaptive_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        AdaptivePacing(**kwargs)


def test_fixed_pacing_per_stage_lengths():
    pacing = FixedPacing([2, 3])
    assert _first_advance(pacing, [1.0] * 10, stage=1) == 2
    pacing.reset()
    assert _first_advance(pacing, [1.0] * 10, stage=2) == 3
    pacing.reset()
    assert _first_advance(pacing, [1.0] * 10, stage=3) == 3  # the last length repeats
    with pytest.raises(ValueError):
        FixedPacing(0)


@pytest.mark.parametrize("kind", ["linear", "root", "geometric"])
def test_pacing_functions_start_at_c0_end_at_one_and_grow(kind):
    values = [pacing_fraction(kind, s, 100, 0.2) for s in range(0, 121)]
    assert values[0] == pytest.approx(0.2)
    assert values[100] == pytest.approx(1.0) and values[120] == pytest.approx(1.0)
    assert all(b >= a for a, b in itertools.pairwise(values))


def test_pacing_function_closed_forms():
    assert pacing_fraction("linear", 50, 100, 0.2) == pytest.approx(0.6)
    assert pacing_fraction("root", 50, 100, 0.2) == pytest.approx((0.04 + 0.96 * 0.5) ** 0.5)
    assert pacing_fraction("geometric", 50, 100, 0.25) == pytest.approx(0.5)


def test_function_pacing_unlocks_all_stages_by_total_steps():
    pacing = FunctionPacing("linear", total_steps=100)
    stage, n = 1, 4
    advanced_at = []
    for step in range(1, 101):
        if pacing.update(0.0, stage, n):
            stage += 1
            advanced_at.append(step)
    assert stage == n
    # linear from 1/4 to 1: stage k is reached when 1/4 + 3/4 s >= k/4, i.e. s >= (k-1)/3
    assert advanced_at == [34, 67, 100]
