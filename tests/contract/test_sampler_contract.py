"""The sampler contract: ``CurriculumSampler`` for every order in ``sampler.ORDERS`` (and an explicit
permutation), cumulative or not, on the noise space of every objective in ``objectives.OBJECTIVES``
(discrete timesteps for the DDPM family, EDM sigma, flow time), built with ``from_schedule``.
"""

from __future__ import annotations

import functools

import pytest
import torch

from diffusion_curriculum.errors import UserError
from diffusion_curriculum.objectives import OBJECTIVES, make_objective
from diffusion_curriculum.pacing import STAGE_CHANGE_CAUSES, AdaptivePacing, FixedPacing
from diffusion_curriculum.runs.checkpoints import roundtrip
from diffusion_curriculum.samplers import ORDERS, CurriculumSampler
from diffusion_curriculum.schedules import DiscreteSchedule

from .tables import OBJECTIVE_EXAMPLES, example

N_CLUSTERS = 5
BATCH = 16
PERMUTATION = [2, 0, 4, 1, 3]
ORDER_CASES = [*ORDERS, "permutation"]


@functools.cache
def _space(objective: str):
    kwargs = example(OBJECTIVE_EXAMPLES, objective, None, "OBJECTIVE_EXAMPLES", "objectives.OBJECTIVES")
    return make_objective(objective, **kwargs).noise_space()


def _make(objective: str, order: str, cumulative: bool, seed: int = 1234, **kw) -> CurriculumSampler:
    order_arg = PERMUTATION if order == "permutation" else order
    # a pacing with state worth restoring (EMA, best, counter) that still advances within 9 steps
    pacing = None if order == "none" else AdaptivePacing(3, ema=0.5, max_steps_per_stage=9)
    return CurriculumSampler.from_schedule(
        _space(objective), N_CLUSTERS, pacing, order_arg, seed, cumulative=cumulative, rank=0, **kw
    )


def _levels64(sampler: CurriculumSampler, x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64) / (sampler.T if sampler.T is not None else float(sampler.density.hi))


def _loss(sampler: CurriculumSampler, x: torch.Tensor, step: int) -> torch.Tensor:
    """A scripted per-sample loss that depends on the draws (so diverging draws diverge decisions)."""
    wobble = ((step * 7919) % 13) / 130.0
    return 1.0 / (1.0 + 0.05 * step) + wobble + 0.1 * _levels64(sampler, x)


def _run(sampler: CurriculumSampler, steps: range):
    record = []
    for step in steps:
        x = sampler.sample(BATCH)
        advanced = sampler.observe(_loss(sampler, x, step), x)
        pacing_state = None if sampler.pacing is None else sampler.pacing.state_dict()
        record.append((x, sampler.stage, advanced, pacing_state))
    return record


def _checkpoint(state):
    """The state as a checkpoint stores and loads it: tensors in safetensors, the rest as JSON."""
    return roundtrip(state)


def _in_unlocked(sampler: CurriculumSampler, x: torch.Tensor) -> bool:
    ok = torch.zeros_like(x, dtype=torch.bool)
    for i in sampler.unlocked:
        a, b = sampler.clusters[i]
        ok |= (x >= a) & (x < b) if sampler.T is not None else (x >= a) & (x <= b)
    return bool(ok.all())


CASES = [
    pytest.param(obj, order, cumulative, id=f"{obj}-{order}-{'cum' if cumulative else 'single'}")
    for obj in OBJECTIVES
    for order in ORDER_CASES
    for cumulative in (True, False)
]


@pytest.mark.parametrize(("objective", "order", "cumulative"), CASES)
def test_state_dict_round_trip_mid_stage_reproduces_the_next_100_draws_and_stages(objective, order, cumulative):
    a = _make(objective, order, cumulative)
    step = 0
    if order == "none":
        _run(a, range(10))
        step = 10
    else:
        # until mid-curriculum (not in the first or the last stage) and a few steps into a stage
        while not (1 < a.stage < a.n_stages and a.pacing.steps_in_stage >= 2):
            _run(a, range(step, step + 1))
            step += 1
            assert step < 200, "the curriculum did not reach a middle stage"
    state = _checkpoint(a.state_dict())
    expected = _run(a, range(step, step + 100))  # a trains on after the checkpoint was written
    if order != "none":
        assert any(adv for _, _, adv, _ in expected), "the 100 steps after the save should contain a stage change"

    b = _make(objective, order, cumulative)
    b.load_state_dict(state)
    got = _run(b, range(step, step + 100))
    for i, ((xa, sa, aa, pa), (xb, sb, ab, pb)) in enumerate(zip(expected, got, strict=True)):
        assert torch.equal(xa, xb), f"draw {i} after the resume differs"
        assert (sa, aa) == (sb, ab), f"stage after step {i} differs"
        assert pa == pb, f"pacing state after step {i} differs"
    assert a.transitions == b.transitions
    assert all(cause in STAGE_CHANGE_CAUSES for _, _, cause in a.transitions)
    assert a.stats() == b.stats()  # the pacing's view (signal, best, counter) included
    assert a.draws == b.draws


@pytest.mark.parametrize(("objective", "order", "cumulative"), CASES)
def test_deterministic_under_a_fixed_seed(objective, order, cumulative):
    a, b = _make(objective, order, cumulative, seed=7), _make(objective, order, cumulative, seed=7)
    for (xa, sa, aa, pa), (xb, sb, ab, pb) in zip(_run(a, range(40)), _run(b, range(40)), strict=True):
        assert torch.equal(xa, xb) and (sa, aa, pa) == (sb, ab, pb)
    other = _make(objective, order, cumulative, seed=8)
    assert not torch.equal(_make(objective, order, cumulative, seed=7).sample(64), other.sample(64))
    # an explicit generator gives the same draws on both and leaves the samplers' own streams alone
    own = a.draws
    xa = a.sample(BATCH, generator=torch.Generator().manual_seed(3))
    xb = b.sample(BATCH, generator=torch.Generator().manual_seed(3))
    assert torch.equal(xa, xb) and a.draws == own


@pytest.mark.parametrize(("objective", "order", "cumulative"), CASES)
def test_draws_are_finite_in_range_and_in_the_unlocked_clusters_at_every_stage(objective, order, cumulative):
    sampler = _make(objective, order, cumulative)
    space = _space(objective)
    discrete = isinstance(space, DiscreteSchedule)
    stages = set()
    for step in range(120):
        for dtype in (torch.float32, torch.float64):
            x = sampler.sample(256, dtype=dtype)
            if discrete:
                assert x.dtype == torch.long and x.min() >= 0 and x.max() < space.T
            else:
                assert x.dtype == dtype and torch.isfinite(x).all()
                assert x.min() >= torch.tensor(space.lo, dtype=dtype) and x.max() <= torch.tensor(space.hi, dtype=dtype)
        assert _in_unlocked(sampler, x)
        stages.add(sampler.stage)
        if sampler.finished:
            break
        sampler.observe(_loss(sampler, x[:BATCH], step), x[:BATCH])
    assert sampler.finished and sampler.unlocked == list(range(N_CLUSTERS))
    assert stages == set(range(1, sampler.n_stages + 1))
    assert sampler.sample(0).shape == (0,)


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_bad_arguments_raise_user_error_naming_the_argument(objective):
    space = _space(objective)
    clusters = _make(objective, "easy_to_hard", True).clusters
    density = None if isinstance(space, DiscreteSchedule) else space
    pacing = FixedPacing(2)

    def build(**kw):
        return lambda: CurriculumSampler(**{"clusters": clusters, "pacing": pacing, "density": density, **kw})

    def from_schedule(n_clusters=N_CLUSTERS, **kw):
        return lambda: CurriculumSampler.from_schedule(space, n_clusters, pacing, **kw)

    sampler = _make(objective, "easy_to_hard", True)
    x = sampler.sample(BATCH)
    other_clusters = _make(objective, "easy_to_hard", True).state_dict() | {
        "clusters": [list(c) for c in CurriculumSampler.from_schedule(space, N_CLUSTERS + 1, pacing).clusters]
    }
    bad = [
        (build(order="backwards"), "order"),
        (build(order=[0, 0, 1, 2, 3]), "order"),
        (build(order=[0, 1]), "order"),
        (build(pacing=None), "pacing"),
        (build(clusters=[]), "clusters"),
        (build(clusters=clusters[:2] + clusters[3:]), "clusters"),
        (build(seed="7"), "seed"),
        (build(seed=1.5), "seed"),
        (build(rank=-1), "rank"),
        (from_schedule(n_clusters=0), "n_clusters"),
        (from_schedule(n_clusters=2.5), "n_clusters"),
        (from_schedule(method="kmeans"), "method"),
        (lambda: sampler.sample(-1), "batch_size"),
        (lambda: sampler.sample(2.5), "batch_size"),
        (lambda: sampler.observe(torch.ones(BATCH), x[:-1]), "timesteps"),
        (lambda: sampler.load_state_dict(sampler.state_dict() | {"format": 99}), "format"),
        (lambda: sampler.load_state_dict(other_clusters), "clusters"),
        (lambda: sampler.load_state_dict(sampler.state_dict() | {"order": "hard_to_easy"}), "order"),
        (lambda: sampler.load_state_dict(sampler.state_dict() | {"stage": 99}), "stage"),
    ]
    if density is None:
        bad.append((from_schedule(n_clusters=space.T + 1), "n_clusters"))
    for call, arg in bad:
        with pytest.raises(UserError) as info:
            call()
        assert arg in str(info.value), f"{info.value!r} does not name {arg!r}"
