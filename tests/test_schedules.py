"""Schedules against diffusers' schedulers and closed forms."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from diffusion_curriculum import DiscreteSchedule, EDMNoise, FlowMatchingTime


@pytest.mark.parametrize(
    ("ours", "beta_schedule"),
    [
        (DiscreteSchedule.linear, "linear"),
        (DiscreteSchedule.scaled_linear, "scaled_linear"),
        (DiscreteSchedule.cosine, "squaredcos_cap_v2"),
    ],
)
def test_discrete_schedules_match_diffusers(ours, beta_schedule):
    kwargs = {}
    if beta_schedule == "scaled_linear":
        kwargs = {"beta_start": 0.00085, "beta_end": 0.012}
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, **kwargs)
    sched = ours(T=1000)
    assert sched.T == 1000
    assert sched.alphas_cumprod.dtype == torch.float64
    # diffusers computes in float32; agree to float32 precision.
    torch.testing.assert_close(sched.alphas_cumprod, ref.alphas_cumprod.double(), rtol=2e-5, atol=1e-7)


def test_snr_and_log_snr_closed_forms():
    sched = DiscreteSchedule.linear(T=50)
    a = sched.alphas_cumprod
    torch.testing.assert_close(sched.snr, a / (1 - a))
    torch.testing.assert_close(sched.log_snr, torch.log(a / (1 - a)))
    assert (sched.snr[1:] <= sched.snr[:-1]).all()


def test_from_alphas_cumprod_keeps_values_and_handles_zero_terminal_snr():
    ac = torch.tensor([1.0, 0.5, 0.25, 0.0])
    sched = DiscreteSchedule.from_alphas_cumprod(ac)
    assert sched.snr[0] == math.inf and sched.snr[-1] == 0
    assert sched.log_snr[-1] == -math.inf
    assert sched.snr[1].item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "bad",
    [
        torch.tensor([0.5, 0.9]),
        torch.tensor([1.2, 0.5]),
        torch.tensor([]),
        torch.tensor([0.5, float("nan")]),
    ],
)
def test_bad_alphas_cumprod_raise(bad):
    with pytest.raises(ValueError):
        DiscreteSchedule.from_alphas_cumprod(bad)


def test_bad_T_raises():
    with pytest.raises(ValueError):
        DiscreteSchedule.linear(T=0)


def test_edm_cdf_icdf_against_lognormal():
    noise = EDMNoise()
    sigma = torch.tensor([0.01, 0.1, 0.3, 1.0, 5.0], dtype=torch.float64)

    # Independent reference: the untruncated log-normal CDF via math.erf, renormalised.
    def phi(x):
        return 0.5 * (1 + math.erf((math.log(x) + 1.2) / (1.2 * math.sqrt(2))))

    lo, hi = phi(0.002), phi(80.0)
    expected = torch.tensor([(phi(s) - lo) / (hi - lo) for s in sigma.tolist()], dtype=torch.float64)
    torch.testing.assert_close(noise.cdf(sigma), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(noise.icdf(noise.cdf(sigma)), sigma, rtol=1e-8, atol=0)
    assert noise.icdf(torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist() == pytest.approx([0.002, 80.0])
    torch.testing.assert_close(noise.snr(sigma), 1 / sigma**2)


def test_flow_matching_uniform_and_logit_normal():
    uniform = FlowMatchingTime()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(uniform.cdf(t), t)
    torch.testing.assert_close(uniform.snr(t), ((1 - t) / t) ** 2)
    ln = FlowMatchingTime(logit_mean=0.3, logit_std=0.8)
    torch.testing.assert_close(ln.icdf(ln.cdf(t)), t, rtol=1e-9, atol=0)
    # median of sigmoid(N(m, s)) is sigmoid(m)
    assert ln.icdf(torch.tensor(0.5)).item() == pytest.approx(1 / (1 + math.exp(-0.3)))


@pytest.mark.parametrize("kwargs", [{"sigma_min": 0.0}, {"sigma_min": 2.0, "sigma_max": 1.0}, {"p_std": 0.0}])
def test_bad_edm_raises(kwargs):
    with pytest.raises(ValueError):
        EDMNoise(**kwargs)
