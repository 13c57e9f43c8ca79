"""Loss weights against their published closed forms and against the errors they weight."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_curriculum import P2, EDMWeighting, MinSNR, SoftMinSNR, Unweighted, make_weighting

SNR = torch.tensor([1e-4, 0.01, 0.5, 1.0, 4.9, 5.0, 5.1, 30.0, 1e4], dtype=torch.float64)


def test_min_snr_closed_forms_per_target():
    w = MinSNR(gamma=5.0)
    clipped = torch.minimum(SNR, torch.tensor(5.0, dtype=torch.float64))
    kw = {"dtype": torch.float64}
    torch.testing.assert_close(w(SNR, "eps", **kw), clipped / SNR)
    torch.testing.assert_close(w(SNR, "v", **kw), clipped / (SNR + 1))
    torch.testing.assert_close(w(SNR, "x0", **kw), clipped)


def test_p2_closed_form_on_eps():
    for k, gamma in [(1.0, 0.5), (1.0, 1.0), (2.0, 1.0)]:
        got = P2(k=k, gamma=gamma)(SNR, "eps", dtype=torch.float64)
        torch.testing.assert_close(got, 1.0 / (k + SNR) ** gamma)


def test_soft_min_snr_equals_k_diffusion_on_edm_target():
    sigma_data = 0.5
    sigma = SNR**-0.5
    kdiff = (sigma * sigma_data) ** 2 / (sigma**2 + sigma_data**2) ** 2
    got = SoftMinSNR(gamma=1 / sigma_data**2)(SNR, "edm", sigma_data=sigma_data, dtype=torch.float64)
    torch.testing.assert_close(got, kdiff)


def test_edm_lambda():
    sigma = SNR**-0.5
    sd = 0.5
    lam = (sigma**2 + sd**2) / (sigma * sd) ** 2
    w = EDMWeighting()
    torch.testing.assert_close(w(SNR, "x0", sigma_data=sd, dtype=torch.float64), lam)
    torch.testing.assert_close(w(SNR, "edm", sigma_data=sd, dtype=torch.float64), torch.ones_like(SNR))


def test_unweighted_is_one_for_every_target():
    for target in ("eps", "v", "x0", "edm", "flow"):
        assert torch.equal(Unweighted()(SNR, target), torch.ones(SNR.shape))


EXTREMES = torch.tensor([0.0, 1e-300, 1e300, math.inf], dtype=torch.float64)


@pytest.mark.parametrize("target", ["eps", "v", "x0", "edm", "flow"])
@pytest.mark.parametrize("weighting", [MinSNR(), SoftMinSNR(), P2(), P2(gamma=0.5), EDMWeighting()])
def test_weights_are_finite_at_zero_and_infinite_snr(target, weighting):
    w = weighting(EXTREMES, target)
    assert torch.isfinite(w).all()
    assert (w >= 0).all()


def test_min_snr_limits():
    w = MinSNR(gamma=5.0)
    eps = w(EXTREMES, "eps", dtype=torch.float64)
    assert eps[0].item() == pytest.approx(1.0) and eps[-1].item() == pytest.approx(0.0, abs=1e-20)
    assert w(EXTREMES, "x0", dtype=torch.float64)[-1].item() == pytest.approx(5.0)


def _errors_vp(snr, g):
    """Errors of one random prediction, in every parameterisation, for x_t = a x0 + s eps."""
    a = torch.sqrt(snr / (1 + snr))
    s = torch.sqrt(1 / (1 + snr))
    x0, eps = torch.randn(2, 16, generator=g, dtype=torch.float64)
    x_t = a * x0 + s * eps
    x0_hat = x0 + torch.randn(16, generator=g, dtype=torch.float64)
    eps_hat = (x_t - a * x0_hat) / s
    v, v_hat = a * eps - s * x0, a * eps_hat - s * x0_hat
    return {
        "x0": ((x0_hat - x0) ** 2).sum(),
        "eps": ((eps_hat - eps) ** 2).sum(),
        "v": ((v_hat - v) ** 2).sum(),
    }


def _errors_edm_and_flow(snr, g, sigma_data=0.5):
    sigma = snr**-0.5
    x0, eps = torch.randn(2, 16, generator=g, dtype=torch.float64)
    x0_hat = x0 + torch.randn(16, generator=g, dtype=torch.float64)
    # EDM: D = c_skip x + c_out F, so F_hat - F_target = (D_hat - x0) / c_out
    c_out = sigma * sigma_data / torch.sqrt(sigma**2 + sigma_data**2)
    f_err = (x0_hat - x0) / c_out
    # flow: x_t = (1-t) x0 + t eps, with SNR = ((1-t)/t)^2; velocity eps - x0; x0 = x_t - t v
    t = 1 / (1 + snr.sqrt())
    x_t = (1 - t) * x0 + t * eps
    v_hat = (x_t - x0_hat) / t
    return {
        "x0": ((x0_hat - x0) ** 2).sum(),
        "edm": (f_err**2).sum(),
        "flow": ((v_hat - (eps - x0)) ** 2).sum(),
    }


@settings(max_examples=60, deadline=None)
@given(
    log_snr=st.floats(-8, 8),
    weighting=st.sampled_from([MinSNR(), MinSNR(gamma=1.0), SoftMinSNR(), P2(), P2(k=2.0, gamma=0.5), EDMWeighting()]),
    seed=st.integers(0, 1000),
)
def test_every_target_gives_the_same_loss_in_x0_space(log_snr, weighting, seed):
    """A weighting is one loss: weight x error^2 must agree across parameterisations."""
    snr = torch.tensor(math.exp(log_snr), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    for errors in (_errors_vp(snr, g), _errors_edm_and_flow(snr, g)):
        losses = {k: float(weighting(snr, k, dtype=torch.float64) * e) for k, e in errors.items()}
        ref = losses["x0"]
        for value in losses.values():
            assert value == pytest.approx(ref, rel=1e-9)


def test_make_weighting_and_errors():
    assert make_weighting("min_snr", gamma=3.0) == MinSNR(gamma=3.0)
    assert make_weighting("p2", k=1.0, gamma=0.5) == P2(k=1.0, gamma=0.5)
    with pytest.raises(ValueError, match="unknown weighting"):
        make_weighting("snr_max")
    with pytest.raises(ValueError, match="bad parameters"):
        make_weighting("min_snr", k=1.0)
    with pytest.raises(ValueError):
        MinSNR(gamma=0.0)
    with pytest.raises(ValueError, match="unknown target"):
        MinSNR()(SNR, "score")
    with pytest.raises(ValueError, match="snr"):
        MinSNR()(torch.tensor([-1.0]), "eps")


def test_weights_keep_device_and_dtype():
    w = MinSNR()(SNR.float(), "eps")
    assert w.dtype == torch.float32 and w.shape == SNR.shape
