"""The pacing contract: every class in ``pacing.PACINGS``, on every example of tables.PACING_EXAMPLES.

A pacing is driven here the way :class:`~diffusion_curriculum.CurriculumSampler` drives it: one
``update(loss, stage, n_stages)`` per step while the curriculum is not finished, ``reset()`` after
each advance (whose ``cause`` must be one of ``STAGE_CHANGE_CAUSES``), ``state_dict()``/
``load_state_dict()`` across a checkpoint.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffusion_curriculum.errors import UserError
from diffusion_curriculum.pacing import PACING_FUNCTIONS, PACINGS, STAGE_CHANGE_CAUSES
from diffusion_curriculum.runs.checkpoints import roundtrip

from .tables import PACING_BAD, PACING_EXAMPLES, bad_cases, cases, example, require

N_STAGES = 40  # enough stages that the curriculum is still running after warm-up + 100 steps


def _losses(n: int, seed: int = 0) -> list[float]:
    """A scripted, noisy, mostly decreasing loss with plateaus and a few non-finite values."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, generator=g, dtype=torch.float64).tolist()
    out = [1.0 / (1.0 + 0.02 * (i // 7)) + 0.05 * noise[i] for i in range(n)]
    for i in range(13, n, 47):
        out[i] = float("nan")
    for i in range(29, n, 61):
        out[i] = float("inf")
    return out


LOSSES = _losses(400)


class Driver:
    """The sampler's side of the pacing protocol, without the sampler."""

    def __init__(self, pacing, n_stages: int = N_STAGES) -> None:
        self.pacing, self.n_stages = pacing, n_stages
        self.stage, self.step, self.since_advance = 1, 0, 0

    def observe(self, loss: float) -> tuple[bool, int, dict]:
        """One step; returns (advanced, stage, the pacing's state after the step)."""
        self.step += 1
        advanced = False
        if self.stage < self.n_stages:
            decision = self.pacing.update(loss, self.stage, self.n_stages)
            assert isinstance(decision, bool), f"update must return a bool, got {decision!r}"
            if decision:
                assert self.pacing.cause in STAGE_CHANGE_CAUSES, f"advanced with cause {self.pacing.cause!r}"
                self.stage += 1
                self.pacing.reset()
                advanced = True
        self.since_advance = 0 if advanced else self.since_advance + 1
        return advanced, self.stage, _checkpoint(self.pacing.state_dict())


def _kwargs(name, kwargs):
    return example(PACING_EXAMPLES, name, kwargs, "PACING_EXAMPLES", "pacing.PACINGS")


def _build(name, kwargs):
    cls = require(PACINGS, name, "PACINGS", "pacing.PACINGS")
    return cls(**_kwargs(name, kwargs))


def _checkpoint(state):
    """The state as a checkpoint stores and loads it: tensors in safetensors, the rest as JSON."""
    return roundtrip(state)


def test_every_registered_pacing_has_example_and_bad_arguments():
    assert set(PACING_EXAMPLES) == set(PACINGS), "tables.PACING_EXAMPLES must have one row per pacing.PACINGS name"
    assert set(PACING_BAD) == set(PACINGS), "tables.PACING_BAD must have one row per pacing.PACINGS name"
    kinds = {kw["kind"] for kw in PACING_EXAMPLES["function"]}
    assert kinds == set(PACING_FUNCTIONS), "every pacing function needs a FunctionPacing example"


def test_registry_holds_pacing_classes():
    for name, cls in PACINGS.items():
        for method in ("update", "reset", "state_dict", "load_state_dict"):
            assert callable(getattr(cls, method, None)), f"PACINGS[{name!r}] lacks {method}"


@pytest.mark.parametrize(("name", "kwargs"), cases(PACINGS, PACING_EXAMPLES))
def test_state_dict_round_trip_mid_stage_reproduces_the_next_100_decisions(name, kwargs):
    kwargs = _kwargs(name, kwargs)
    a = Driver(_build(name, kwargs))
    i = 0
    # warm up until at least one advance happened and we are a few steps into a stage
    while not (a.stage >= 2 and a.since_advance >= 2):
        a.observe(LOSSES[i])
        i += 1
        assert i < 200, f"{name} {kwargs}: no stage advance within 200 steps of the scripted loss"
    assert a.stage < a.n_stages
    state = _checkpoint(a.pacing.state_dict())
    stage_at_save, step_at_save = a.stage, a.step

    expected = [a.observe(loss) for loss in LOSSES[i : i + 100]]
    assert any(adv for adv, _, _ in expected), "the 100 steps after the save should contain an advance"

    b = Driver(_build(name, kwargs))
    b.stage, b.step = stage_at_save, step_at_save  # the sampler restores these from its own state
    b.pacing.load_state_dict(state)
    got = [b.observe(loss) for loss in LOSSES[i : i + 100]]
    for k, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have[:2] == want[:2], f"decision or stage {k} steps after the resume differs"
        assert have[2] == want[2], f"pacing state {k} steps after the resume differs: {have[2]} != {want[2]}"


@pytest.mark.parametrize(("name", "kwargs"), cases(PACINGS, PACING_EXAMPLES))
def test_deterministic_two_instances_decide_alike(name, kwargs):
    kwargs = _kwargs(name, kwargs)
    a, b = Driver(_build(name, kwargs)), Driver(_build(name, kwargs))
    assert [a.observe(x) for x in LOSSES] == [b.observe(x) for x in LOSSES]
    assert a.stage > 1


@pytest.mark.parametrize(("name", "kwargs"), cases(PACINGS, PACING_EXAMPLES))
@pytest.mark.parametrize("n_stages", [1, 2, N_STAGES])
def test_extreme_losses_and_stage_counts(name, kwargs, n_stages):
    """Non-finite, zero, negative and huge losses; one stage, two stages, many: a bool every step,
    a state that still round-trips through a checkpoint, and no advance past the last stage."""
    kwargs = _kwargs(name, kwargs)
    extremes = [float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1e300, 1e-300, 1.0] * 20
    d = Driver(_build(name, kwargs), n_stages=n_stages)
    for loss in extremes:
        d.observe(loss)
        assert 1 <= d.stage <= n_stages
    state = _checkpoint(d.pacing.state_dict())
    fresh = _build(name, kwargs)
    fresh.load_state_dict(state)
    for value in state.values():
        if isinstance(value, float):
            assert not math.isnan(value), f"a non-finite loss leaked into the state: {state}"


@pytest.mark.parametrize(("name", "kwargs", "arg"), bad_cases(PACINGS, PACING_BAD))
def test_bad_arguments_raise_user_error_naming_the_argument(name, kwargs, arg):
    cls = require(PACINGS, name, "PACINGS", "pacing.PACINGS")
    if kwargs is None:
        require(PACING_BAD, name, "PACING_BAD", "pacing.PACINGS")
    with pytest.raises(UserError) as info:
        cls(**kwargs)
    assert arg in str(info.value), f"{name}({kwargs}) raised {info.value!r}, which does not name {arg!r}"
