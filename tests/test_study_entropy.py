"""The relative-entropy estimators against closed forms, brute force and each other."""

import math

import pytest
import torch

from diffusion_curriculum.data.gmm import GaussianMixture
from diffusion_curriculum.schedules import DiscreteSchedule
from diffusion_curriculum.study.entropy import (
    conditional_kl,
    empirical_marginal_kl,
    gaussian_marginal_kl,
    log_spaced_timesteps,
    mixture_marginal_kl,
)

F64 = torch.float64
LINEAR = DiscreteSchedule.linear(1000)


def _abar(t: int) -> float:
    """Paper time: 1 at t = 0, else prod_{s <= t} (1 - beta_s), written out independently of the package."""
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    out = 1.0
    for s in range(t):
        out *= 1.0 - betas[s]
    return out


def _kl_1d(m0: float, v0: float, m1: float, v1: float) -> float:
    return 0.5 * (v0 / v1 - 1.0 + math.log(v1 / v0) + (m0 - m1) ** 2 / v1)


def _marginal_1d(mean: float, var: float, t: int) -> tuple[float, float]:
    a = _abar(t)
    return math.sqrt(a) * mean, a * var + 1.0 - a


@pytest.mark.parametrize(("t", "expected"), [(1, 9.7e-2), (10, 5.4e-3), (100, 8.4e-5)])
def test_closed_form_for_narrow_gaussian_data(t, expected):
    """Data N(0.5, 0.01^2) under the linear schedule: the issue's reference values, and a scalar float64 formula."""
    kl = gaussian_marginal_kl(torch.tensor([0.5], dtype=F64), torch.tensor([[1e-4]], dtype=F64), LINEAR)
    reference = _kl_1d(*_marginal_1d(0.5, 1e-4, t - 1), *_marginal_1d(0.5, 1e-4, t))
    assert float(kl[t - 1]) == pytest.approx(reference, rel=1e-9)
    assert float(kl[t - 1]) == pytest.approx(expected, rel=0.02)


def test_monte_carlo_with_exact_densities_matches_the_closed_form():
    mix = GaussianMixture(torch.tensor([1.0]), torch.tensor([[0.5]]), torch.tensor([1e-4]))
    exact = gaussian_marginal_kl(torch.tensor([0.5]), torch.tensor([[1e-4]]), LINEAR)
    kl, se = mixture_marginal_kl(mix, LINEAR, [1, 10, 100], 1_000_000, torch.Generator().manual_seed(0))
    for i, t in enumerate([1, 10, 100]):
        assert abs(float(kl[i] - exact[t - 1])) <= 3 * float(se[i]), t
    for i, t in enumerate([1, 10]):
        assert float(kl[i]) == pytest.approx(float(exact[t - 1]), rel=0.02)


def test_gaussian_marginal_kl_matches_torch_multivariate_normals():
    g = torch.Generator().manual_seed(3)
    d = 4
    a = torch.randn(d, d, generator=g, dtype=F64)
    cov = a @ a.T / d + 0.05 * torch.eye(d, dtype=F64)
    mean = torch.randn(d, generator=g, dtype=F64)
    ours = gaussian_marginal_kl(mean, cov, LINEAR)
    for t in (1, 2, 50, 400, 1000):
        p, q = (
            torch.distributions.MultivariateNormal(
                math.sqrt(_abar(s)) * mean, _abar(s) * cov + (1 - _abar(s)) * torch.eye(d, dtype=F64)
            )
            for s in (t - 1, t)
        )
        assert float(ours[t - 1]) == pytest.approx(float(torch.distributions.kl_divergence(p, q)), rel=1e-7)


def test_singular_data_covariance_gives_infinite_kl_at_t1_only():
    cov = torch.diag(torch.tensor([1.0, 0.0], dtype=F64))
    kl = gaussian_marginal_kl(torch.zeros(2), cov, LINEAR)
    assert math.isinf(float(kl[0])) and torch.isfinite(kl[1:]).all()


def _log_q(x: torch.Tensor, x0: torch.Tensor, a: float) -> torch.Tensor:
    """log N(x; sqrt(a) x0, (1 - a) I), written out."""
    var = 1 - a
    return (-0.5 * (x - math.sqrt(a) * x0) ** 2 / var - 0.5 * math.log(2 * math.pi * var)).sum(1)


def test_conditional_kl_matches_direct_monte_carlo():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(64, 3, generator=g, dtype=F64) * 0.7 + 0.3
    closed = conditional_kl(LINEAR, float((x0**2).sum(1).mean()), 3)
    assert math.isinf(float(closed[0]))
    for t in (2, 10, 100, 900):
        ap, ac = _abar(t - 1), _abar(t)
        idx = torch.randint(64, (400_000,), generator=g)
        x = math.sqrt(ap) * x0[idx] + math.sqrt(1 - ap) * torch.randn(400_000, 3, generator=g, dtype=F64)

        ratio = _log_q(x, x0[idx], ap) - _log_q(x, x0[idx], ac)
        se = float(ratio.std()) / math.sqrt(ratio.numel())
        assert abs(float(ratio.mean()) - float(closed[t - 1])) <= 4 * se, t


def test_empirical_estimator_agrees_with_the_mixture_code_on_the_same_items():
    """The empirical marginal at t >= 2 is a mixture of one Gaussian per item: two implementations, one answer."""
    g = torch.Generator().manual_seed(2)
    items = torch.randn(40, 3, generator=g, dtype=F64) * 0.5
    mix = GaussianMixture(torch.full((40,), 1 / 40, dtype=F64), items, torch.full((40,), 1e-12, dtype=F64))
    ts = [2, 5, 30]
    emp, emp_se = empirical_marginal_kl(items, LINEAR, ts, 200_000, torch.Generator().manual_seed(0))
    ref, ref_se = mixture_marginal_kl(mix, LINEAR, ts, 200_000, torch.Generator().manual_seed(1))
    for i in range(len(ts)):
        assert abs(float(emp[i] - ref[i])) <= 4 * math.hypot(float(emp_se[i]), float(ref_se[i])), ts[i]
    with pytest.raises(ValueError, match="infinite at t = 1"):
        empirical_marginal_kl(items, LINEAR, [1], 10)


def test_log_spaced_timesteps():
    ts = log_spaced_timesteps(1000, 40)
    assert ts[0] == 1 and ts[-1] == 1000 and ts == sorted(set(ts))
    assert log_spaced_timesteps(1000, 5, start=2)[0] == 2
    with pytest.raises(ValueError):
        log_spaced_timesteps(10, 0)


def _entropy(out, *extra):
    import subprocess
    import sys

    argv = [sys.executable, "-m", "diffusion_curriculum.cli", "study", "entropy", "--out", str(out), "--points", "6"]
    return subprocess.run([*argv, *extra], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("dataset", "mc"), [("gmm", "exact_mc"), ("digits", "empirical_mc")])
def test_study_entropy_end_to_end(tmp_path, dataset, mc):
    import json

    proc = _entropy(tmp_path, "--dataset", dataset, "--samples", "500", "--seeds", "0,1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "study.jsonl").read_text().splitlines()]
    meta, curves = rows[0], rows[1:]
    assert meta["kind"] == "meta" and meta["dataset"] == dataset and meta["T"] == 1000
    assert sorted({(r["estimator"], r["seed"]) for r in curves}) == sorted(
        (e, s) for e in ("conditional", "gaussian", mc) for s in (0, 1)
    )
    closed = next(r for r in curves if r["estimator"] == "conditional")
    assert closed["t"] == list(range(1, 1001)) and closed["kl"][0] is None  # infinite at t = 1
    assert all(v > 0 for v in closed["kl"][1:])
    assert (tmp_path / "kl.png").stat().st_size > 0
    assert "relative entropy between consecutive marginals is" in (tmp_path / "study.md").read_text()


def test_study_entropy_refuses_continuous_objectives(tmp_path):
    proc = _entropy(tmp_path, "--dataset", "gmm", "--set", "objective.name=edm")
    assert proc.returncode == 2 and "discrete DDPM schedule" in proc.stderr
    assert "Traceback" not in proc.stderr
