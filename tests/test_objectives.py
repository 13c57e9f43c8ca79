"""Training objectives against closed forms: oracle models, zero models, weighting consistency."""

import json
import math

import pytest
import torch

from diffusion_curriculum import (
    CurriculumSampler,
    DiscreteSchedule,
    EDMNoise,
    FixedPacing,
    FlowMatchingTime,
    MinSNR,
)
from diffusion_curriculum.objectives import OBJECTIVES, make_objective

F64 = torch.float64
SD = 0.5  # sigma_data
LEVELS = {
    "eps": torch.tensor([0, 1, 250, 500, 998, 999]),
    "v": torch.tensor([0, 1, 250, 500, 998, 999]),
    "x0": torch.tensor([0, 1, 250, 500, 998, 999]),
    "edm": torch.tensor([0.002, 0.05, 0.5, 1.0, 10.0, 80.0]),
    "flow": torch.tensor([0.0, 0.01, 0.3, 0.5, 0.9, 1.0]),
}
SHAPES = [(3, 4, 4), (5,)]


def _coefficients(obj, levels):
    """(alpha, sigma) of x = alpha x0 + sigma eps at these levels, float64, from the closed forms."""
    if obj.name in ("eps", "v", "x0"):
        a = obj.scheduler.alphas_cumprod.to(F64)[levels]  # the forward process is diffusers'
        return a.sqrt(), (1 - a).sqrt()
    lv = levels.to(F64)
    if obj.name == "edm":
        return torch.ones_like(lv), lv
    return 1 - lv, lv


def _bc(v, x):
    return v.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def _target(obj, x0, noise, levels):
    """The regression target and the noisy x the target refers to, in closed form."""
    alpha, sigma = (_bc(c, x0) for c in _coefficients(obj, levels))
    x = alpha * x0 + sigma * noise
    if obj.name == "eps":
        return noise, x
    if obj.name == "v":
        return alpha * noise - sigma * x0, x
    if obj.name == "x0":
        return x0, x
    if obj.name == "flow":
        return noise - x0, x
    s = sigma
    c_skip, c_out = SD**2 / (s**2 + SD**2), s * SD / (s**2 + SD**2).sqrt()
    return (x0 - c_skip * x) / c_out, x


def _model_input(obj, x, levels):
    """What the network must be fed: x itself, or c_in x for EDM."""
    if obj.name != "edm":
        return x
    return x / _bc((levels.to(F64) ** 2 + SD**2).sqrt(), x)


def _data(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn((6, *shape), generator=g) * SD + 0.3
    noise = torch.randn((6, *shape), generator=g)
    return x0, noise


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", OBJECTIVES)
def test_oracle_model_has_zero_loss_and_recovers_x0(name, shape):
    obj = make_objective(name, sigma_data=SD)
    levels = LEVELS[name]
    x0, noise = _data(shape)
    target, x = _target(obj, x0, noise, levels)
    expected_input = _model_input(obj, x, levels)

    def oracle(x_in, time_input, cond):
        assert cond == {"label": "passed through"}
        torch.testing.assert_close(time_input, obj.model_time(levels))
        torch.testing.assert_close(x_in, expected_input, atol=1e-5, rtol=1e-5)
        return target

    cond = {"label": "passed through"}
    loss = obj.loss(oracle, x0, levels, noise, cond)
    assert loss.shape == (6,) and loss.dtype == torch.float32
    assert loss.max() < 1e-10
    # x0 from eps at t = 999 divides by sqrt(alpha_bar) = 0.006: float32 cancellation costs ~1e-5.
    torch.testing.assert_close(obj.predict_x0(oracle, x, levels, cond), x0, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_zero_model_loss_is_the_mean_square_target_and_its_expectation(name):
    obj = make_objective(name, sigma_data=SD)
    levels = LEVELS[name][1:-1]  # interior levels: no SNR 0 or inf
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(len(levels), 200_000, generator=g) * SD  # data variance sigma_data^2
    noise = torch.randn(x0.shape, generator=g)
    loss = obj.loss(lambda x, t, c: torch.zeros_like(x), x0, levels, noise, None)
    target, _ = _target(obj, x0, noise, levels)
    torch.testing.assert_close(loss, target.pow(2).mean(1))

    alpha, sigma = _coefficients(obj, levels)
    expected = {
        "eps": torch.ones_like(alpha),
        "x0": torch.full_like(alpha, SD**2),
        "v": alpha**2 + sigma**2 * SD**2,
        "edm": torch.ones_like(alpha),  # EDM's preconditioning makes the target unit-variance
        "flow": torch.full_like(alpha, 1 + SD**2),
    }[name]
    torch.testing.assert_close(loss.to(F64), expected, rtol=0.03, atol=0)


def _output_for_x0(name, x, alpha, sigma, x0_hat):
    """The network output whose clean-data estimate is x0_hat, for noisy x = alpha x0 + sigma eps."""
    eps_hat = (x - alpha * x0_hat) / sigma
    if name == "eps":
        return eps_hat
    if name == "v":
        return alpha * eps_hat - sigma * x0_hat
    if name == "x0":
        return x0_hat
    if name == "flow":
        return eps_hat - x0_hat
    c_skip, c_out = SD**2 / (sigma**2 + SD**2), sigma * SD / (sigma**2 + SD**2).sqrt()
    return (x0_hat - c_skip * x) / c_out


@pytest.mark.parametrize("name", OBJECTIVES)
def test_weighted_loss_is_the_same_x0_space_error_for_every_target(name):
    obj = make_objective(name, sigma_data=SD)
    levels = LEVELS[name][1:-1]
    x0, noise = _data((16,), seed=2)
    x0, noise = x0[1:-1].to(F64), noise[1:-1].to(F64)
    alpha, sigma = (_bc(c, x0) for c in _coefficients(obj, levels))
    x = alpha * x0 + sigma * noise
    x0_hat = x0 + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    output = _output_for_x0(name, x, alpha, sigma, x0_hat)
    loss = obj.loss(lambda *args: output, x0, levels, noise, None)

    snr = obj.snr(levels)
    weighted = MinSNR(gamma=5.0)(snr, obj.target, sigma_data=obj.sigma_data, dtype=F64) * loss
    expected = snr.clamp(max=5.0) * (x0_hat - x0).pow(2).mean(1)
    torch.testing.assert_close(weighted, expected, rtol=1e-4, atol=0)


def test_noise_space_types():
    for name in ("eps", "v", "x0"):
        assert isinstance(make_objective(name).noise_space(), DiscreteSchedule)
    edm = make_objective("edm", sigma_min=0.01, sigma_max=50.0, p_mean=-1.0, p_std=1.5).noise_space()
    assert edm == EDMNoise(0.01, 50.0, -1.0, 1.5)
    flow = make_objective("flow", flow_logit_mean=0.5, flow_logit_std=1.0).noise_space()
    assert flow == FlowMatchingTime(logit_mean=0.5, logit_std=1.0)
    assert make_objective("flow").noise_space() == FlowMatchingTime()


def test_v_target_is_diffusers_get_velocity():
    obj = make_objective("v")
    x0, noise = _data((3, 4, 4))
    t = LEVELS["v"]
    v = obj.scheduler.get_velocity(x0, noise, t)
    target, _ = _target(obj, x0, noise, t)
    torch.testing.assert_close(v, target, atol=1e-6, rtol=1e-5)
    assert obj.loss(lambda *args: v, x0, t, noise, None).max() == 0
    assert obj.scheduler.config.prediction_type == "v_prediction"


@pytest.mark.parametrize(
    ("beta_schedule", "schedule"),
    [("linear", DiscreteSchedule.linear()), ("squaredcos_cap_v2", DiscreteSchedule.cosine())],
)
def test_ddpm_snr_matches_the_schedule(beta_schedule, schedule):
    obj = make_objective("eps", beta_schedule=beta_schedule)
    t = torch.arange(1000)
    snr = obj.snr(t)
    assert snr.dtype == F64
    # diffusers' alphas_cumprod are float32, so 1 - a_0 = 1e-4 is off by ~6e-4 relative; the core's float64.
    torch.testing.assert_close(snr, schedule.snr, rtol=1e-3, atol=0)
    torch.testing.assert_close(obj.noise_space().snr, schedule.snr, rtol=1e-3, atol=0)


def test_continuous_snr():
    sigma = LEVELS["edm"]
    torch.testing.assert_close(make_objective("edm").snr(sigma), sigma.to(F64) ** -2)
    t = LEVELS["flow"][1:-1]
    torch.testing.assert_close(make_objective("flow").snr(t), ((1 - t.to(F64)) / t.to(F64)) ** 2)


def test_model_time_values():
    t = torch.tensor([0, 500, 999])
    assert torch.equal(make_objective("eps").model_time(t), t)
    sigma = torch.tensor([1.0, math.exp(4.0), 0.002])
    expected = torch.tensor([0.0, 1000.0, 250 * math.log(0.002)])
    torch.testing.assert_close(make_objective("edm").model_time(sigma), expected)
    torch.testing.assert_close(
        make_objective("flow").model_time(torch.tensor([0.0, 0.25, 1.0])), torch.tensor([0.0, 250.0, 1000.0])
    )


def test_bad_names_and_shapes():
    with pytest.raises(ValueError, match="unknown objective"):
        make_objective("epsilon")
    with pytest.raises(ValueError, match="beta_schedule"):
        make_objective("eps", beta_schedule="quadratic")
    x0, noise = _data((4,))
    with pytest.raises(ValueError, match="levels must have shape"):
        make_objective("flow").loss(lambda x, t, c: x, x0, torch.rand(5), noise, None)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_state_rebuilds_the_objective(name):
    obj = make_objective(name, num_train_timesteps=100, sigma_data=0.7, sigma_max=40.0, flow_logit_std=1.0)
    state = json.loads(json.dumps(obj.config()))
    again = make_objective(**state)
    assert again.config() == obj.config() and again.name == name and again.target == name
    assert again.sigma_data == 0.7


@pytest.mark.parametrize("name", OBJECTIVES)
def test_levels_from_the_curriculum_sampler_train(name):
    obj = make_objective(name)
    sampler = CurriculumSampler.from_schedule(obj.noise_space(), n_clusters=4, pacing=FixedPacing(1))
    x0, noise = _data((2, 4, 4))
    levels = sampler.sample(6)
    assert levels.dtype == (torch.long if name in ("eps", "v", "x0") else torch.float32)
    loss = obj.loss(lambda x, t, c: torch.zeros_like(x), x0, levels, noise, None)
    assert loss.shape == (6,) and torch.isfinite(loss).all()
    assert torch.isfinite(MinSNR()(obj.snr(levels), obj.target, sigma_data=obj.sigma_data)).all()
