"""The timestep-sampler contract: every sampler in ``samplers.SAMPLERS``, on every example of
tables.SAMPLER_EXAMPLES, over the noise space of every objective in ``objectives.OBJECTIVES``
(discrete timesteps, EDM sigma, flow time), built with ``from_schedule`` on 5 clusters.

What the trainer, the CLI, ``compare`` and the diffusers recipe rely on: the protocol's methods,
draws in range with the right dtype, loss weights that are finite and >= 0, statistics that
count the draws, a state that survives a checkpoint exactly, determinism under a seed, per-rank
streams, and bad arguments refused with a UserError naming the argument.
"""

from __future__ import annotations

import copy
import functools
import io

import pytest
import torch

from diffusion_curriculum.errors import UserError
from diffusion_curriculum.objectives import OBJECTIVES, make_objective
from diffusion_curriculum.samplers import SAMPLERS, TimestepSampler
from diffusion_curriculum.schedules import DiscreteSchedule

from .tables import OBJECTIVE_EXAMPLES, SAMPLER_BAD, SAMPLER_EXAMPLES, bad_cases, example, require

N_CLUSTERS = 5
BATCH = 16


@functools.cache
def _space(objective: str):
    kwargs = example(OBJECTIVE_EXAMPLES, objective, None, "OBJECTIVE_EXAMPLES", "objectives.OBJECTIVES")
    return make_objective(objective, **kwargs).noise_space()


def _build(name: str, row, objective: str, seed: int = 1234, rank: int = 0):
    cls = require(SAMPLERS, name, "SAMPLERS", "samplers.SAMPLERS")
    kwargs = copy.deepcopy(example(SAMPLER_EXAMPLES, name, row, "SAMPLER_EXAMPLES", "samplers.SAMPLERS"))
    return cls.from_schedule(_space(objective), N_CLUSTERS, seed=seed, rank=rank, **kwargs)


def _unit(sampler, x: torch.Tensor) -> torch.Tensor:
    """Levels scaled to about [0, 1] (timesteps / T, sigma / sigma_max, flow time)."""
    return x.to(torch.float64) / (sampler.T if sampler.T is not None else float(sampler.clusters[-1][1]))


def _loss(sampler, x: torch.Tensor, step: int) -> torch.Tensor:
    """A scripted per-sample loss that depends on the draws and the step, falling at different speeds
    per noise level, with a wobble (so that diverging draws give diverging states)."""
    u = _unit(sampler, x)
    wobble = ((step * 7919) % 13) / 130.0
    return (0.2 + u) * (1.0 + wobble) / (1.0 + 0.05 * step * (1.0 + 3.0 * u))


def _run(sampler, steps: range):
    record = []
    for step in steps:
        x = sampler.sample(BATCH)
        w = sampler.loss_weights(x)
        advanced = sampler.observe(_loss(sampler, x, step), x)
        record.append((x, w, advanced, sampler.stage))
    return record


def _checkpoint(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _same_stats(a: dict, b: dict) -> bool:
    """Equal statistics, NaN (a cluster without losses) equal to NaN."""
    la, lb = (torch.tensor(s.pop("cluster_loss")).nan_to_num(-1.0) for s in (a, b))
    return torch.equal(la, lb) and a == b


def _cases():
    return [
        pytest.param(name, row, obj, id=f"{name}-{i}-{obj}")
        for name in SAMPLERS
        for i, row in enumerate(SAMPLER_EXAMPLES.get(name) or [None])
        for obj in OBJECTIVES
    ]


def test_every_registered_sampler_has_example_and_bad_arguments():
    assert set(SAMPLER_EXAMPLES) == set(SAMPLERS), "tables.SAMPLER_EXAMPLES needs one row per SAMPLERS name"
    assert set(SAMPLER_BAD) == set(SAMPLERS), "tables.SAMPLER_BAD needs one row per SAMPLERS name"


@pytest.mark.parametrize(("name", "row", "objective"), _cases())
def test_state_round_trip_mid_run_reproduces_the_next_100_draws_weights_and_stats(name, row, objective):
    a = _build(name, row, objective)
    assert isinstance(a, TimestepSampler)
    _run(a, range(30))
    state = _checkpoint(a.state_dict())
    expected = _run(a, range(30, 130))
    b = _build(name, row, objective)
    b.load_state_dict(state)
    got = _run(b, range(30, 130))
    for i, ((xa, wa, aa, sa), (xb, wb, ab, sb)) in enumerate(zip(expected, got, strict=True)):
        assert torch.equal(xa, xb), f"draw {i} after the resume differs"
        assert torch.equal(wa, wb), f"loss weights {i} after the resume differ"
        assert (aa, sa) == (ab, sb), f"stage after step {i} differs"
    assert _same_stats(a.stats(), b.stats())
    assert a.draws == b.draws
    assert a.transitions == b.transitions


@pytest.mark.parametrize(("name", "row", "objective"), _cases())
def test_deterministic_under_a_seed_with_its_own_stream_per_rank(name, row, objective):
    a, b = _build(name, row, objective, seed=7), _build(name, row, objective, seed=7)
    for (xa, wa, *_), (xb, wb, *_) in zip(_run(a, range(40)), _run(b, range(40)), strict=True):
        assert torch.equal(xa, xb) and torch.equal(wa, wb)
    fresh = _build(name, row, objective, seed=7).sample(64)
    assert not torch.equal(fresh, _build(name, row, objective, seed=8).sample(64))
    assert not torch.equal(fresh, _build(name, row, objective, seed=7, rank=1).sample(64))
    # an explicit generator gives the same draws on both and leaves the samplers' own streams alone
    own = a.draws
    xa = a.sample(BATCH, generator=torch.Generator().manual_seed(3))
    xb = b.sample(BATCH, generator=torch.Generator().manual_seed(3))
    assert torch.equal(xa, xb) and a.draws == own


@pytest.mark.parametrize(("name", "row", "objective"), _cases())
def test_draws_weights_and_stats_are_well_formed_throughout_a_run(name, row, objective):
    sampler = _build(name, row, objective)
    space = _space(objective)
    discrete = isinstance(space, DiscreteSchedule)
    for step in range(60):
        sampler.stats(reset=True)
        for dtype in (torch.float32, torch.float64):
            x = sampler.sample(256, dtype=dtype)
            if discrete:
                assert x.dtype == torch.long and x.min() >= 0 and x.max() < space.T
            else:
                assert x.dtype == dtype and torch.isfinite(x).all()
                assert x.min() >= torch.tensor(space.lo, dtype=dtype) and x.max() <= torch.tensor(space.hi, dtype=dtype)
        w = sampler.loss_weights(x)
        assert w.shape == x.shape and w.dtype == torch.float32 and w.device == x.device
        assert torch.isfinite(w).all() and (w >= 0).all()
        stats = sampler.stats()
        assert sum(stats["cluster_draws"]) == 512 and len(stats["cluster_draws"]) == N_CLUSTERS
        probs = torch.tensor(stats["cluster_probs"], dtype=torch.float64)
        assert probs.shape == (N_CLUSTERS,) and (probs >= 0).all() and abs(float(probs.sum()) - 1) < 1e-9
        assert 1 <= stats["stage"] <= stats["n_stages"] and isinstance(sampler.unlocked_intervals, list)
        loss = _loss(sampler, x[:BATCH], step)
        if step % 17 == 5:  # non-finite losses (the trainer skips such steps; a direct user may not)
            loss[0], loss[1] = float("nan"), float("inf")
        assert isinstance(sampler.observe(loss, x[:BATCH]), bool)
    assert sampler.sample(0).shape == (0,)


@pytest.mark.parametrize(("name", "row", "objective"), _cases())
def test_the_draws_follow_the_announced_cluster_probabilities(name, row, objective):
    """With the state held fixed, each cluster's mean share of many batches is its ``cluster_probs``."""
    sampler = _build(name, row, objective)
    _run(sampler, range(30))
    probs = torch.tensor(sampler.stats(reset=True)["cluster_probs"], dtype=torch.float64)
    for _ in range(100):
        sampler.sample(64)
    shares = torch.tensor(sampler.stats()["cluster_draws"], dtype=torch.float64) / 6400
    assert torch.allclose(shares, probs, atol=0.02), (shares, probs)


@pytest.mark.parametrize(("name", "kwargs", "arg"), bad_cases(SAMPLERS, SAMPLER_BAD))
def test_bad_arguments_raise_user_error_naming_the_argument(name, kwargs, arg):
    if kwargs is None:
        example(SAMPLER_BAD, name, None, "SAMPLER_BAD", "samplers.SAMPLERS")
    for objective in OBJECTIVES:
        with pytest.raises(UserError) as info:
            SAMPLERS[name].from_schedule(_space(objective), N_CLUSTERS, **copy.deepcopy(kwargs))
        assert arg in str(info.value), f"{name}({kwargs}) raised {info.value!r}, not naming {arg!r}"


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_bad_calls_and_foreign_states_raise_user_error(name):
    sampler = _build(name, None, "eps")
    x = sampler.sample(BATCH)
    others = [_build(other, None, "eps") for other in SAMPLERS if other != name]
    more_clusters = SAMPLERS[name].from_schedule(_space("eps"), N_CLUSTERS + 1, **_more_cluster_kwargs(name))
    bad = [
        (lambda: sampler.sample(-1), "batch_size"),
        (lambda: sampler.sample(2.5), "batch_size"),
        (lambda: sampler.observe(torch.ones(BATCH), x[:-1]), "timesteps"),
        (lambda: sampler.load_state_dict(more_clusters.state_dict()), "clusters"),
        (lambda: SAMPLERS[name].from_schedule(_space("eps"), N_CLUSTERS, seed="7", **_kwargs(name)), "seed"),
        (lambda: SAMPLERS[name].from_schedule(_space("eps"), N_CLUSTERS, rank=-1, **_kwargs(name)), "rank"),
    ] + [(lambda o=o: sampler.load_state_dict(o.state_dict()), "sampler") for o in others]
    for call, arg in bad:
        with pytest.raises(UserError) as info:
            call()
        assert arg in str(info.value), f"{info.value!r} does not name {arg!r}"


def _kwargs(name: str) -> dict:
    return copy.deepcopy(example(SAMPLER_EXAMPLES, name, None, "SAMPLER_EXAMPLES", "samplers.SAMPLERS"))


def _more_cluster_kwargs(name: str) -> dict:
    kwargs = _kwargs(name)
    if "shares" in kwargs:
        kwargs["shares"] = [*kwargs["shares"], 0.1]
    return kwargs
