"""Metrics against a known density: alpha_sigma of the objectives, NLL, sliced Wasserstein, MMD, excess error,
and the toy data sets' mixtures."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import diffusion_curriculum.metrics.synthetic as synthetic
from diffusion_curriculum import CurriculumSampler
from diffusion_curriculum.data import GaussianMixture, default_gmm, load_dataset
from diffusion_curriculum.errors import UserError
from diffusion_curriculum.metrics import excess_denoising_error, mmd, nll, sliced_wasserstein, vector_metrics
from diffusion_curriculum.objectives import OBJECTIVES, make_objective

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _levels(objective, n, g):
    """n training-range levels of the objective: timesteps, sigmas or flow times."""
    if objective.name in ("eps", "v", "x0"):
        return torch.randint(0, objective.num_train_timesteps, (n,), generator=g)
    return objective.noise_space().icdf(torch.rand(n, generator=g, dtype=F64).clamp(1e-6, 1 - 1e-6))


class _Recorder(nn.Module):
    """Returns zeros and keeps the last network input and time input."""

    def forward(self, x, time, cond=None):
        self.x, self.time = x, time
        return torch.zeros_like(x)


# ---------------------------------------------------------------- Objective.alpha_sigma


@pytest.mark.parametrize("name", OBJECTIVES)
def test_alpha_sigma_matches_each_objectives_own_noising(name):
    objective = make_objective(name)
    g = _gen(0)
    levels = _levels(objective, 64, g)
    x0, eps = torch.randn(64, 3, generator=g, dtype=F64), torch.randn(64, 3, generator=g, dtype=F64)
    alpha, sigma = objective.alpha_sigma(levels)
    assert alpha.dtype == sigma.dtype == F64 and alpha.shape == sigma.shape == (64,)
    recorder = _Recorder()
    objective.loss(recorder, x0, levels, eps)  # the objective noises x0 itself and hands x to the network
    x = recorder.x
    if name == "edm":  # the network sees c_in x
        x = x * (sigma[:, None] ** 2 + objective.sigma_data**2).sqrt()
    torch.testing.assert_close(x, alpha[:, None] * x0 + sigma[:, None] * eps, rtol=1e-12, atol=1e-12)
    assert ((alpha >= 0) & (alpha <= 1) & (sigma > 0)).all()
    with pytest.raises(ValueError, match="1-D"):
        objective.alpha_sigma(levels[:, None])


def test_alpha_sigma_values():
    t = torch.tensor([0, 999])
    alpha, sigma = make_objective("eps").alpha_sigma(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(2, dtype=F64))
    assert alpha[0] > 0.99 and alpha[1] < 0.01
    assert [v.tolist() for v in make_objective("edm").alpha_sigma(torch.tensor([0.5, 2.0]))] == [[1, 1], [0.5, 2]]
    assert [v.tolist() for v in make_objective("flow").alpha_sigma(torch.tensor([0.25, 1.0]))] == [[0.75, 0], [0.25, 1]]


# ---------------------------------------------------------------- NLL


def test_nll_matches_entropy_closed_forms():
    g = _gen(1)
    gauss = GaussianMixture(torch.ones(1, dtype=F64), torch.zeros(1, 3, dtype=F64), torch.tensor([[0.5, 1.0, 2.0]]))
    entropy = 0.5 * float(torch.log(2 * math.pi * math.e * gauss.variances).sum())
    assert nll(gauss.sample(20_000, g), gauss) == pytest.approx(entropy, abs=4 * math.sqrt(1.5 / 20_000))
    # Far-apart components: the entropy is that of the weights plus the mean component entropy.
    w = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    var = torch.tensor([0.25, 1.0, 4.0], dtype=F64)
    far = GaussianMixture(w, torch.tensor([[-1e3, 0.0], [0.0, 0.0], [1e3, 0.0]], dtype=F64), var)
    entropy = float(-(w * w.log()).sum() + (w * torch.log(2 * math.pi * math.e * var)).sum())
    samples = far.sample(20_000, g)
    stderr = float(far.log_prob(samples).std()) / math.sqrt(20_000)
    assert nll(samples, far) == pytest.approx(entropy, abs=4 * stderr)


def test_nll_of_mixture_samples_is_its_monte_carlo_entropy_and_chunks_agree(monkeypatch):
    gmm = default_gmm(3)
    g = _gen(2)
    samples, reference = gmm.sample(4000, g), gmm.sample(100_000, g)
    entropy = -float(gmm.log_prob(reference).mean())
    assert nll(samples, gmm) == pytest.approx(entropy, abs=4 * float(gmm.log_prob(samples).std()) / math.sqrt(4000))
    assert nll(samples.float(), gmm) == pytest.approx(-float(gmm.log_prob(samples.float()).mean()), rel=1e-12)
    monkeypatch.setattr(synthetic, "_CHUNK_ELEMENTS", 50)  # chunks of 2 rows
    assert nll(samples, gmm) == pytest.approx(-float(gmm.log_prob(samples).mean()), rel=1e-12)
    with pytest.raises(ValueError, match="dimension 2, the mixture 3"):
        nll(samples[:, :2], gmm)


# ---------------------------------------------------------------- sliced Wasserstein and MMD


def test_sliced_wasserstein_is_exact_w2_in_one_dimension():
    g = _gen(3)
    x, y = torch.randn(37, 1, generator=g, dtype=F64), 2 * torch.randn(53, 1, generator=g, dtype=F64) + 0.5
    # Equal-size versions of both empirical measures: each point repeated (other size) times.
    xs = np.repeat(np.sort(x[:, 0].numpy()), 53)
    ys = np.repeat(np.sort(y[:, 0].numpy()), 37)
    exact = math.sqrt(np.mean((xs - ys) ** 2))
    assert sliced_wasserstein(x, y, n_projections=5, generator=g) == pytest.approx(exact, rel=1e-12)
    assert sliced_wasserstein(x, x + 0.7, generator=g) == pytest.approx(0.7, rel=1e-12)
    assert sliced_wasserstein(x, x, generator=g) == 0.0


def test_sliced_wasserstein_same_versus_shifted():
    gmm = default_gmm(2)
    g = _gen(4)
    x, y = gmm.sample(3000, g), gmm.sample(2000, g)
    same = sliced_wasserstein(x, y, generator=g)
    shifted = sliced_wasserstein(x, y + 0.5, generator=g)
    assert same < 0.15 and shifted > 0.4  # the shift has length 0.71: SW about 0.5
    # A pure translation b in D dimensions: SW^2 = E[(theta.b)^2] = |b|^2 / D over uniform directions.
    b = torch.tensor([0.3, -0.4, 1.2, 0.0], dtype=F64)
    z = torch.randn(100, 4, generator=g, dtype=F64)
    assert sliced_wasserstein(z, z + b, n_projections=8192, generator=g) == pytest.approx(1.3 / 2, rel=0.03)
    with pytest.raises(ValueError, match="dimensions differ"):
        sliced_wasserstein(x, z)
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein(x, y, n_projections=0)


def _mmd_direct(x, y, bandwidths):
    def k(a, b):
        d2 = torch.cdist(a, b) ** 2
        return sum(torch.exp(-d2 / (2 * h**2)) for h in bandwidths)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = x.shape[0], y.shape[0]
    return float(
        (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        - 2 * kxy.mean()
    )


def test_mmd_matches_direct_formula_and_separates_distributions():
    g = _gen(5)
    x, y = torch.randn(200, 3, generator=g, dtype=F64), torch.randn(150, 3, generator=g, dtype=F64) + 0.3
    assert mmd(x, y, bandwidths=(0.5, 2.0)) == pytest.approx(_mmd_direct(x, y, (0.5, 2.0)), rel=1e-10)
    gmm = default_gmm(2)
    a, b = gmm.sample(1000, g), gmm.sample(1000, g)
    same, shifted = mmd(a, b, generator=g), mmd(a, b + 0.5, generator=g)
    assert abs(same) < 0.015 and shifted > 0.1  # same: a few standard errors (~3e-3) from 0
    # Subsampling to max_n is seeded.
    assert mmd(a, b, max_n=300, generator=_gen(0)) == mmd(a, b, max_n=300, generator=_gen(0))
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(x, y, bandwidths=(1.0, 0.0))
    with pytest.raises(ValueError, match="max_n"):
        mmd(x, y, max_n=1)
    with pytest.raises(ValueError, match="NaN"):
        mmd(x, torch.full((5, 3), float("nan")))


def test_vector_metrics_keys():
    gmm = default_gmm(2)
    g = _gen(6)
    samples, reference = gmm.sample(500, g).float(), gmm.sample(600, g).float()
    out = vector_metrics(samples, reference, gmm, generator=_gen(0))
    assert set(out) == {"nll", "sliced_wasserstein", "mmd"} and all(isinstance(v, float) for v in out.values())
    assert out["nll"] == pytest.approx(nll(samples, gmm))
    assert set(vector_metrics(samples, reference, None, generator=_gen(0))) == {"sliced_wasserstein", "mmd"}


@pytest.mark.parametrize("max_n", [4000, 300])  # 300: both the samples and the reference subsampled for the MMD
def test_a_vector_scorer_reused_over_many_sample_sets_equals_the_metrics_computed_afresh(max_n):
    """The scorer's cached reference terms change nothing: for every sample set, bit for bit what
    sliced_wasserstein then mmd give from a fresh generator (the draws vector_metrics always made)."""
    gmm = default_gmm(3)
    reference = gmm.sample(2500, _gen(1)).float()
    scorer = synthetic.VectorScorer(reference, gmm, 400, generator=_gen(0), max_n=max_n)
    for seed in range(3):
        samples = gmm.sample(400, _gen(10 + seed)).float() * (1 + 0.2 * seed)
        g = _gen(0)
        sw = sliced_wasserstein(samples, reference, generator=g)
        expected = {
            "nll": nll(samples, gmm),
            "sliced_wasserstein": sw,
            "mmd": mmd(samples, reference, generator=g, max_n=max_n),
        }
        assert scorer.score(samples) == expected
    with pytest.raises(UserError, match="set up for 400 rows, got 399"):
        scorer.score(samples[:399])
    with pytest.raises(UserError, match="n: expected a sample count >= 2"):
        synthetic.VectorScorer(reference, gmm, 1)


# ---------------------------------------------------------------- excess denoising error


class _Oracle(nn.Module):
    """The exact optimal network for an objective: its output makes ``predict_x0`` the posterior mean E[x0 | x].

    It recovers the level from the time input (t itself, sigma = exp(time / 250) for EDM, t = time / 1000
    for flow), takes eps* = E[eps | x] from the mixture, x0* = (x - sigma eps*) / alpha, and returns
    what the objective's parameterisation needs, plus ``offset`` for a deliberately wrong model.
    """

    def __init__(self, objective, gmm, offset=0.0):
        super().__init__()
        self.objective, self.gmm, self.offset = objective, gmm, offset
        self.anchor = nn.Parameter(torch.zeros((), dtype=F64))  # a float64 model: inputs arrive in float64

    def forward(self, inp, time, cond=None):
        name = self.objective.name
        if name == "edm":
            levels = torch.exp(time.double() / 250.0)
            x = inp * (levels[:, None] ** 2 + self.objective.sigma_data**2).sqrt()
        else:
            levels = time.double() / 1000.0 if name == "flow" else time
            x = inp
        alpha, sigma = self.objective.alpha_sigma(levels)
        a, s = alpha[:, None], sigma[:, None]
        eps = self.gmm.optimal_eps(x, alpha, sigma)
        x0 = (x - s * eps) / a
        if name == "eps":
            out = eps
        elif name == "v":
            out = a * eps - s * x0
        elif name == "x0":
            out = x0
        elif name == "flow":
            out = eps - x0
        else:  # edm: F = (D - c_skip x) / c_out
            sd = self.objective.sigma_data
            c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
            out = (x0 - c_skip * x) / c_out
        return out + self.offset


def _clusters(objective, n=4):
    return CurriculumSampler.from_schedule(objective.noise_space(), n_clusters=n, order="none").clusters


@pytest.mark.parametrize("name", OBJECTIVES)
def test_excess_error_of_the_optimal_denoiser_is_zero_and_of_a_wrong_one_positive(name):
    objective, gmm = make_objective(name), default_gmm(2)
    clusters = _clusters(objective)
    exact = excess_denoising_error(
        _Oracle(objective, gmm), objective, gmm, clusters, n_per_cluster=256, generator=_gen(7)
    )
    assert len(exact) == len(clusters) and max(exact) < 1e-8
    wrong = excess_denoising_error(
        _Oracle(objective, gmm, offset=0.1), objective, gmm, clusters, n_per_cluster=256, generator=_gen(7)
    )
    assert min(wrong) > 1e-7 and sum(wrong) / len(wrong) > 1e-3
    if name == "eps":  # eps_hat = eps* + 0.1 exactly
        assert wrong == pytest.approx([0.01] * len(clusters), rel=1e-6)


def test_excess_error_at_one_timestep_is_snr_times_offset_squared_for_x0():
    """An x0 error delta is an eps error alpha delta / sigma: excess SNR(t) delta^2 at a single timestep."""
    objective, gmm = make_objective("x0"), default_gmm(3)
    errors = excess_denoising_error(
        _Oracle(objective, gmm, offset=0.05), objective, gmm, [(100, 101), (700, 701)], generator=_gen(8)
    )
    snr = objective.snr(torch.tensor([100, 700]))
    assert errors == pytest.approx((snr * 0.05**2).tolist(), rel=1e-6)


def test_excess_error_draws_levels_within_each_cluster():
    gmm = default_gmm(2)
    seen = []

    def recorder(x, time, cond=None):
        seen.append((x.dtype, time.clone()))
        return torch.zeros_like(x)

    ddpm = make_objective("eps")
    excess_denoising_error(recorder, ddpm, gmm, [(0, 3), (10, 13)], n_per_cluster=300, generator=_gen(9))
    assert seen[0][0] == torch.float32  # parameter-free callables get float32 inputs
    assert set(seen[0][1].tolist()) == {0, 1, 2} and set(seen[1][1].tolist()) == {10, 11, 12}
    seen.clear()
    flow = make_objective("flow")
    excess_denoising_error(recorder, flow, gmm, [(0.0, 0.25), (0.25, 1.0)], n_per_cluster=300, generator=_gen(9))
    t0, t1 = seen[0][1] / 1000, seen[1][1] / 1000
    assert t0.min() > 0 and t0.max() <= 0.25 + 1e-6 and t0.max() - t0.min() > 0.2
    assert t1.min() >= 0.25 - 1e-6 and t1.max() <= 1.0 + 1e-6


def test_excess_error_float32_oracle_is_near_zero():
    """A float32 model: only the rounding of its input and output remains."""
    objective, gmm = make_objective("eps"), default_gmm(2)
    oracle = _Oracle(objective, gmm).float()
    errors = excess_denoising_error(oracle, objective, gmm, _clusters(objective), generator=_gen(10))
    assert max(errors) < 1e-9


def test_excess_error_rejects_bad_input():
    gmm, ddpm, edm = default_gmm(2), make_objective("eps"), make_objective("edm")
    model = _Oracle(ddpm, gmm)
    with pytest.raises(ValueError, match="discrete cluster"):
        excess_denoising_error(model, ddpm, gmm, [(0, 2000)])
    with pytest.raises(ValueError, match="discrete cluster"):
        excess_denoising_error(model, ddpm, gmm, [(5, 5)])
    with pytest.raises(ValueError, match="continuous cluster"):
        excess_denoising_error(model, edm, gmm, [(0.001, 1.0)])
    with pytest.raises(ValueError, match="empty"):
        excess_denoising_error(model, ddpm, gmm, [])
    with pytest.raises(ValueError, match="n_per_cluster"):
        excess_denoising_error(model, ddpm, gmm, [(0, 10)], n_per_cluster=0)


# ---------------------------------------------------------------- the toy data sets' mixtures


def test_eight_gaussians_mixture_is_exact():
    for name in ("toy2d", "8gaussians"):
        gmm = load_dataset(name, n_samples=100).gmm
        assert gmm.n_components == 8 and torch.equal(gmm.weights, torch.full((8,), 0.125, dtype=F64))
        torch.testing.assert_close(gmm.variances, torch.full((8, 2), 0.01, dtype=F64), rtol=1e-15, atol=0)
        torch.testing.assert_close(gmm.mean, torch.zeros(2, dtype=F64), rtol=0, atol=1e-15)
        torch.testing.assert_close(gmm.variance, torch.ones(2, dtype=F64), rtol=1e-12, atol=0)
    b = load_dataset("toy2d", n_samples=2000)
    centre = b.gmm.means[b.train_labels]  # each point's mode is its label
    assert ((b.train.double() - centre).norm(dim=1) < 0.6).all()
    assert load_dataset("checkerboard", n_samples=100).gmm is None


@pytest.mark.parametrize("name", ["toy2d", "moons", "swiss_roll"])
def test_toy_mixture_matches_its_generator(name):
    b = load_dataset(name, n_samples=5000, seed=1)
    gmm, data = b.gmm, torch.cat([b.train, b.heldout]).double()
    torch.testing.assert_close(gmm.mean, torch.zeros(2, dtype=F64), rtol=0, atol=1e-5)  # standardized space
    assert float(gmm.variance.mean()) == pytest.approx(1.0, abs=1e-4)
    own = gmm.sample(5000, _gen(2))
    # Same mean log-density on the data as on the mixture's own samples (its entropy), within 4 standard errors.
    assert nll(data, gmm) == pytest.approx(nll(own, gmm), abs=0.08)
    assert abs(mmd(data, own, max_n=2000, generator=_gen(3))) < 3e-3
    if name == "toy2d":  # negative control: a mixture with 1.5 times the noise variance fails the same check
        wide = GaussianMixture(gmm.weights, gmm.means, gmm.variances * 1.5)
        assert abs(nll(data, wide) - nll(wide.sample(5000, _gen(2)), wide)) > 0.2
