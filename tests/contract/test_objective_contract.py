"""The objective contract: every name in ``objectives.OBJECTIVES``, built by ``make_objective``.

The model is a tiny ``nn.Module`` with the objectives' interface ``model(x, time_input, cond)``.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from diffusion_curriculum.errors import UserError
from diffusion_curriculum.objectives import OBJECTIVES, Objective, make_objective
from diffusion_curriculum.schedules import DiscreteSchedule
from diffusion_curriculum.weighting import WEIGHTINGS, make_weighting

from .tables import OBJECTIVE_BAD, OBJECTIVE_EXAMPLES, bad_cases, cases, example

SHAPE = (3, 2, 2)


class TinyModel(nn.Module):
    """x -> a x + b tanh(time / 1000), per channel; enough to have gradients and to see the time input."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = nn.Parameter(0.5 + 0.1 * torch.randn(SHAPE[0], 1, 1, generator=g))
        self.b = nn.Parameter(0.1 * torch.randn(SHAPE[0], 1, 1, generator=g))

    def forward(self, x, time_input, cond=None):
        t = torch.tanh(time_input.float() / 1000).reshape(-1, *([1] * (x.ndim - 1)))
        return self.a * x + self.b * t


def _build(name, kwargs) -> Objective:
    kwargs = example(OBJECTIVE_EXAMPLES, name, kwargs, "OBJECTIVE_EXAMPLES", "objectives.OBJECTIVES")
    obj = make_objective(name, **kwargs)
    assert isinstance(obj, Objective) and obj.name == name
    return obj


def _end_levels(obj: Objective) -> torch.Tensor:
    """The first and last level of the noise space and their neighbours."""
    space = obj.noise_space()
    if isinstance(space, DiscreteSchedule):
        T = space.T
        return torch.tensor([0, 1, T - 2, T - 1])
    lo, hi = float(space.lo), float(space.hi)
    eps = 1e-6 * (hi - lo)
    return torch.tensor([lo, lo + eps, hi - eps, hi], dtype=torch.float32)


def _data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *SHAPE), generator=g) * 0.5, torch.randn((n, *SHAPE), generator=g)


def _outputs(obj: Objective, model, levels):
    x0, noise = _data(levels.shape[0])
    alpha, sigma = obj.alpha_sigma(levels)
    x = (alpha.reshape(-1, 1, 1, 1) * x0 + sigma.reshape(-1, 1, 1, 1) * noise).float()
    return {
        "loss": obj.loss(model, x0, levels, noise),
        "predict_x0": obj.predict_x0(model, x, levels),
        "snr": obj.snr(levels),
        "model_time": obj.model_time(levels),
        "alpha": alpha,
        "sigma": sigma,
    }


def test_every_registered_objective_has_example_and_bad_arguments():
    assert set(OBJECTIVE_EXAMPLES) == set(OBJECTIVES), "tables.OBJECTIVE_EXAMPLES needs one row per OBJECTIVES name"
    assert set(OBJECTIVE_BAD) == set(OBJECTIVES), "tables.OBJECTIVE_BAD needs one row per OBJECTIVES name"


@pytest.mark.parametrize(("name", "kwargs"), cases(OBJECTIVES, OBJECTIVE_EXAMPLES))
def test_state_round_trip_rebuilds_an_identical_objective(name, kwargs):
    obj = _build(name, kwargs)
    state = json.loads(json.dumps(obj.config()))  # the JSON-able config that rebuilds it
    again = make_objective(**state)
    assert type(again) is type(obj) and again.config() == obj.config()
    assert (again.target, again.sigma_data) == (obj.target, obj.sigma_data)
    space, space_again = obj.noise_space(), again.noise_space()
    if isinstance(space, DiscreteSchedule):
        assert torch.equal(space.alphas_cumprod, space_again.alphas_cumprod)
    else:
        assert space == space_again
    levels = _end_levels(obj)
    model = TinyModel()
    want, got = _outputs(obj, model, levels), _outputs(again, model, levels)
    for key in want:
        assert torch.equal(want[key], got[key]), key


@pytest.mark.parametrize(("name", "kwargs"), cases(OBJECTIVES, OBJECTIVE_EXAMPLES))
def test_deterministic_under_a_fixed_seed(name, kwargs):
    a, b = _build(name, kwargs), _build(name, kwargs)
    levels = _end_levels(a)
    want, got = _outputs(a, TinyModel(seed=3), levels), _outputs(b, TinyModel(seed=3), levels)
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert want["loss"].shape == (levels.shape[0],) and want["loss"].dtype == torch.float32
    assert want["predict_x0"].shape == (levels.shape[0], *SHAPE)


@pytest.mark.parametrize(("name", "kwargs"), cases(OBJECTIVES, OBJECTIVE_EXAMPLES))
def test_finite_losses_targets_and_gradients_at_the_ends_of_the_noise_space(name, kwargs):
    obj = _build(name, kwargs)
    levels = _end_levels(obj)
    model = TinyModel()
    out = _outputs(obj, model, levels)
    for key in ("loss", "predict_x0", "model_time", "alpha", "sigma"):
        assert torch.isfinite(out[key]).all(), f"{name}: {key} = {out[key]} at levels {levels.tolist()}"
    assert not torch.isnan(out["snr"]).any() and (out["snr"] >= 0).all()
    # the zero model's loss is the mean square of the regression target: finite at the ends too
    x0, noise = _data(levels.shape[0], seed=5)
    zero = obj.loss(lambda x, t, c: torch.zeros_like(x), x0, levels, noise)
    assert torch.isfinite(zero).all()
    # every registered weighting on this objective's target, and a gradient step through it
    for wname in WEIGHTINGS:
        model.zero_grad()
        weights = make_weighting(wname)(obj.snr(levels), obj.target, sigma_data=obj.sigma_data)
        assert torch.isfinite(weights).all(), f"{wname} on {name}: {weights}"
        loss = (weights * obj.loss(model, x0, levels, noise)).mean()
        loss.backward()
        assert torch.isfinite(loss)
        for p in model.parameters():
            assert torch.isfinite(p.grad).all(), f"{wname} on {name}: gradient {p.grad}"


@pytest.mark.parametrize(("name", "kwargs", "arg"), bad_cases(OBJECTIVES, OBJECTIVE_BAD))
def test_bad_arguments_raise_user_error_naming_the_argument(name, kwargs, arg):
    if kwargs is None:
        example(OBJECTIVE_BAD, name, None, "OBJECTIVE_BAD", "objectives.OBJECTIVES")
    with pytest.raises(UserError) as info:
        make_objective(name, **kwargs)
    assert arg in str(info.value), f"make_objective({name!r}, {kwargs}) raised {info.value!r}, not naming {arg!r}"


@pytest.mark.parametrize(("name", "kwargs"), cases(OBJECTIVES, OBJECTIVE_EXAMPLES))
def test_levels_of_the_wrong_shape_raise_user_error_naming_levels(name, kwargs):
    obj = _build(name, kwargs)
    levels = _end_levels(obj)
    x0, noise = _data(levels.shape[0])
    model = TinyModel()
    for bad in (levels[:-1], levels.reshape(-1, 1), torch.cat([levels, levels])):
        with pytest.raises(UserError, match="levels"):
            obj.loss(model, x0, bad, noise)
        with pytest.raises(UserError, match="levels"):
            obj.predict_x0(model, x0, bad)


def test_unknown_objective_name_raises_user_error_naming_it():
    with pytest.raises(UserError, match="objective"):
        make_objective("epsilon")
