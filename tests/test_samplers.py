"""The timestep samplers of issue 16 against their definitions: SpeeD's and the logit-normal densities
against closed forms, loss-importance sampling's unbiasedness and its Improved-DDPM rule, the
learning-progress rule on scripted loss curves, the matched marginal against a finished run's shares,
the exact optimal loss of Gaussian-mixture data, and the config and CLI that choose a sampler.
(The shared checks every sampler passes are in tests/contract/test_timestep_sampler_contract.py.)"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare, norm

from diffusion_curriculum import (
    SAMPLERS,
    CurriculumSampler,
    DiscreteSchedule,
    EDMNoise,
    FixedPacing,
    FlowMatchingTime,
    LearningProgressSampler,
    LogitNormal,
    LossImportance,
    MatchedMarginal,
    SpeeD,
    cluster_timesteps,
)
from diffusion_curriculum.assembly import build_objective, build_sampler, matched_shares
from diffusion_curriculum.config import ConfigError, load_config, sampler_options
from diffusion_curriculum.data.gmm import default_gmm
from diffusion_curriculum.metrics.synthetic import optimal_cluster_losses
from diffusion_curriculum.objectives import make_objective
from diffusion_curriculum.weighting import make_weighting

F64 = torch.float64


def _frequencies(sampler, batches: int, batch: int, n: int) -> np.ndarray:
    counts = torch.zeros(n, dtype=torch.long)
    for _ in range(batches):
        counts += torch.bincount(sampler.sample(batch), minlength=n)
    return counts.numpy()


# ----- SpeeD ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["uniform", "snr"])
def test_speed_timestep_density_is_the_closed_form(method):
    """p_t = k / Z for t < tau, 1 / Z above, Z = k tau + (T - tau) (k = 5, tau = 0.7 T): exactly in
    the sampler's own CDF, and in 240,000 draws (Pearson's chi-square), also with unequal clusters that
    straddle tau (snr clustering)."""
    T = 200
    schedule = DiscreteSchedule.linear(T)
    sampler = SpeeD(cluster_timesteps(schedule, 7, method), schedule=schedule, seed=3)
    tau = 140
    closed = np.where(np.arange(T) < tau, 5.0, 1.0) / (5.0 * tau + (T - tau))
    edges = torch.arange(T + 1, dtype=F64) / T
    exact = (sampler.cdf(edges[1:]) - sampler.cdf(edges[:-1])).numpy()
    assert np.allclose(exact, closed, rtol=1e-12, atol=0)
    observed = _frequencies(sampler, 1200, 200, T)
    assert chisquare(observed, closed * observed.sum()).pvalue > 1e-3


def test_speed_continuous_density_is_the_closed_form_in_the_base_quantile():
    """Flow time under the uniform base: density 5 / Z below 0.7 and 1 / Z above; every draw's CDF value
    under the closed form must then be uniform (a Kolmogorov-Smirnov distance below 0.01 on 100,000)."""
    sampler = SpeeD.from_schedule(FlowMatchingTime(), 6, seed=1)
    t = torch.cat([sampler.sample(1000, dtype=F64) for _ in range(100)]).sort().values
    z = 5 * 0.7 + 0.3
    cdf = torch.where(t < 0.7, 5 * t, 5 * 0.7 + (t - 0.7)) / z
    ecdf = torch.arange(1, t.numel() + 1, dtype=F64) / t.numel()
    assert float((cdf - ecdf).abs().max()) < 0.01


def test_speed_defaults_are_the_published_threshold_and_change_aware_weights():
    """tau = 700 of T = 1000 is where d sqrt(1 - abar)/dt first falls below 5e-5 on the linear schedule
    (SpeeD's `meaningful_steps`), and the weights are their `_weights("ours")` computed with numpy."""
    schedule = DiscreteSchedule.linear(1000)
    abar = schedule.alphas_cumprod.numpy()
    assert int(np.argmax(np.gradient(np.sqrt(1 - abar)) < 5e-5)) + 1 == 700
    sampler = SpeeD.from_schedule(schedule, 10)
    assert sampler.tau == 0.7
    g = np.gradient(1 - abar)
    k = 1 - 0.6
    ours = k + (1 - 2 * k) * (g - g.min()) / (g.max() - g.min())
    expected = np.concatenate([ours[:700], np.ones(300)])
    got = sampler.loss_weights(torch.arange(1000)).double().numpy()
    assert np.allclose(got, expected, rtol=1e-6)
    plain = SpeeD.from_schedule(schedule, 10, change_aware=False)
    assert torch.equal(plain.loss_weights(torch.arange(1000)), torch.ones(1000))


# ----- logit-normal --------------------------------------------------------------------------------
@pytest.mark.parametrize(("loc", "scale"), [(0.0, 1.0), (0.5, 0.6)])
def test_logit_normal_timestep_density_is_the_closed_form(loc, scale):
    """P(t) = Phi((logit((t+1)/T) - m)/s) - Phi((logit(t/T) - m)/s), exactly and in draws."""
    T = 100
    sampler = LogitNormal(cluster_timesteps(DiscreteSchedule.linear(T), 10), loc=loc, scale=scale, seed=2)
    u = np.arange(T + 1) / T
    with np.errstate(divide="ignore"):
        cdf = norm.cdf((np.log(u) - np.log1p(-u) - loc) / scale)
    closed = np.diff(cdf)
    edges = torch.arange(T + 1, dtype=F64) / T
    assert np.allclose((sampler.cdf(edges[1:]) - sampler.cdf(edges[:-1])).numpy(), closed, atol=1e-12)
    observed = _frequencies(sampler, 1000, 200, T)
    keep = closed * observed.sum() > 5  # chi-square's usual validity
    expected = closed[keep] * observed.sum()
    assert chisquare(observed[keep], expected * observed[keep].sum() / expected.sum()).pvalue > 1e-3


def test_logit_normal_flow_time_is_sd3s_density():
    sampler = LogitNormal.from_schedule(FlowMatchingTime(), 8, loc=0.3, scale=1.2, seed=5)
    t = torch.cat([sampler.sample(1000, dtype=F64) for _ in range(100)]).sort().values.numpy()
    cdf = norm.cdf((np.log(t / (1 - t)) - 0.3) / 1.2)
    assert np.abs(cdf - np.arange(1, t.size + 1) / t.size).max() < 0.01


# ----- loss-importance sampling --------------------------------------------------------------------
def _scripted_losses(t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per-sample losses whose scale varies 50-fold over t, with multiplicative noise."""
    level = 0.02 + (1 - t.double() / 50) ** 3
    return level * (1 + 0.5 * torch.randn(t.shape, generator=g, dtype=F64)).abs()


def test_loss_importance_weighted_loss_is_an_unbiased_estimate_of_the_uniform_loss():
    """Monte Carlo with a fixed seed: the mean of the weighted batch losses lies within 3 standard
    errors of the uniform expectation, while the unweighted mean (the same draws) does not."""
    T = 50
    sampler = LossImportance(cluster_timesteps(DiscreteSchedule.linear(T), 5), seed=4)
    g = torch.Generator().manual_seed(0)
    while not sampler.warmed_up:
        t = sampler.sample(64)
        sampler.observe(_scripted_losses(t, g), t)
    p = sampler.bin_probs()
    assert float(p.max() / p.min()) > 5  # importance sampling at work, not uniform draws
    truth = float((0.02 + (1 - torch.arange(T, dtype=F64) / 50) ** 3).mean()) * float(
        (1 + 0.5 * torch.randn(200_000, generator=torch.Generator().manual_seed(9), dtype=F64)).abs().mean()
    )
    weighted, plain = [], []
    for _ in range(3000):
        t = sampler.sample(32)
        loss = _scripted_losses(t, g)
        weighted.append(float((sampler.loss_weights(t).double() * loss).mean()))
        plain.append(float(loss.mean()))
        sampler.observe(loss, t)
    for values, unbiased in ((weighted, True), (plain, False)):
        mean, se = np.mean(values), np.std(values) / math.sqrt(len(values))
        assert (abs(mean - truth) < 3 * se) == unbiased, (mean, truth, se)


@pytest.mark.parametrize(("T", "batch"), [(40, 48), (8, 200)])  # (8, 200): more than 10 new losses per t a step
def test_loss_importance_follows_improved_ddpms_rule(T, batch):
    """The probabilities equal a line-by-line reimplementation of improved-diffusion's
    LossSecondMomentResampler (uniform until every t has 10 losses; then sqrt(mean(last 10^2)), a
    0.1% uniform floor), fed the same (t, loss) stream one sample at a time; weights are 1/(T p_t)."""
    sampler = LossImportance(cluster_timesteps(DiscreteSchedule.linear(T), 4), seed=6)
    history, counts = np.zeros((T, 10)), np.zeros(T, dtype=int)
    g = torch.Generator().manual_seed(1)

    def reference() -> np.ndarray:
        if not (counts == 10).all():
            return np.full(T, 1 / T)
        w = np.sqrt(np.mean(history**2, axis=-1))
        return w / w.sum() * (1 - 0.001) + 0.001 / T

    for step in range(120):
        t = sampler.sample(batch)
        loss = _scripted_losses(t, g)
        sampler.observe(loss, t)
        for ti, li in zip(t.tolist(), loss.tolist(), strict=True):
            if counts[ti] == 10:
                history[ti, :-1] = history[ti, 1:]
                history[ti, -1] = li
            else:
                history[ti, counts[ti]] = li
                counts[ti] += 1
        assert np.allclose(sampler.bin_probs().numpy(), reference(), rtol=1e-10, atol=0), step
    assert sampler.warmed_up
    ts = torch.arange(T)
    assert np.allclose(sampler.loss_weights(ts).double().numpy(), 1 / (T * reference()), rtol=1e-6)


# ----- learning progress ---------------------------------------------------------------------------
CLUSTER_CURVES = {
    # cluster 0 improves slowly, cluster 1 plateaus early, cluster 2 is learnt and then forgotten
    0: lambda s: 2.0 * math.exp(-s / 400),
    1: lambda s: 0.5 + 4.0 * math.exp(-s / 15),
    2: lambda s: 0.3 if s < 150 else 0.3 * (1 + (s - 150) / 40),
}


def _env_losses(t: torch.Tensor, step: int, clusters) -> torch.Tensor:
    k = torch.bucketize(t, torch.tensor([b for _, b in clusters[:-1]]), right=True)
    return torch.tensor([CLUSTER_CURVES[int(i)](step) for i in k], dtype=F64)


class _ReferenceRule:
    """The rule of issue 16 written out again, fed each step's per-cluster (sums, counts), for comparison."""

    def __init__(self, pi, total=1000, hf=20, hs=80, eps0=0.2):
        self.pi, self.total, self.hf, self.hs, self.eps0 = np.array(pi), total, hf, hs, eps0
        k = len(pi)
        self.fs, self.fn, self.ss, self.sn = np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k)
        self.share, self.step = np.array(pi), 0

    def update(self, sums, counts):
        hf, hs = self.hf, self.hs
        self.fs, self.fn = (1 - 1 / hf) * self.fs + sums, (1 - 1 / hf) * self.fn + counts
        self.ss, self.sn = (1 - 1 / hs) * self.ss + sums, (1 - 1 / hs) * self.sn + counts
        self.share = (1 - 1 / hs) * self.share + (1 / hs) * counts / counts.sum()
        self.step += 1

    def probs(self):
        pi = self.pi
        if self.step < self.hs:
            return pi
        progress = np.abs(np.log(self.ss / self.sn) - np.log(self.fs / self.fn))
        value = progress / np.maximum(self.share, pi / 4)
        q = pi * np.clip(value / np.sum(pi * value), 0.25, 4.0)
        q = q / q.sum()
        f = self.step / self.total
        eps = 1.0 if f >= 0.6 else self.eps0 if f < 0.4 else self.eps0 + (1 - self.eps0) * (f - 0.4) / 0.2
        return (1 - eps) * q + eps * pi


def test_learning_progress_moves_samples_as_the_rule_says_on_scripted_loss_curves():
    """Three clusters with known loss curves: the drawn shares equal the rule recomputed independently at
    every step; once the plateau has set in the plateaued cluster gets fewer samples than its uniform
    share and the slowly improving and the forgotten ones more; shares never fall below pi/4; from 60%
    of the run the draws are exactly uniform."""
    clusters = cluster_timesteps(DiscreteSchedule.linear(300), 3)
    sampler = LearningProgressSampler(clusters, total_steps=1000, seed=0)
    pi = sampler.base_shares.numpy()
    reference = _ReferenceRule(pi)
    for step in range(1000):
        probs = np.array(sampler.stats()["cluster_probs"])
        assert np.allclose(probs, reference.probs(), rtol=1e-9, atol=1e-12), step
        assert (probs >= pi / 4 - 1e-12).all(), step
        if step >= 600:
            assert torch.equal(sampler.bin_probs(), sampler.base_shares)
        if step == 250:  # cluster 1 has plateaued, 0 improves slowly, 2 is being forgotten
            assert probs[1] < pi[1] < probs[2] and probs[1] < probs[0] < probs[2]
        t = sampler.sample(60)
        counts = np.bincount((t // 100).numpy(), minlength=3).astype(float)
        assert (np.abs(counts - 60 * probs) < 1).all()  # stratified: floor or ceil of the expected count
        loss = _env_losses(t, step, clusters)
        reference.update(np.bincount((t // 100).numpy(), weights=loss.numpy(), minlength=3), counts)
        sampler.observe(loss, t)


@pytest.mark.parametrize("seed", range(3))
def test_learning_progress_never_gives_a_cluster_less_than_a_quarter_of_its_share(seed):
    """Random environments (each of 6 unequal clusters' losses jumps by up to 100x, drifts or plateaus at
    random steps, with noise; random batch sizes down to fewer draws than clusters): at every step every
    cluster's probability is at least pi / 4."""
    rng = np.random.default_rng(seed)
    clusters = cluster_timesteps(DiscreteSchedule.linear(400), 6, "snr")
    sampler = LearningProgressSampler(clusters, total_steps=500, min_horizon=3, seed=seed)
    pi = sampler.base_shares.numpy()
    level = rng.uniform(0.01, 10, 6)
    for step in range(300):  # the anneal starts at step 200
        probs = np.array(sampler.stats()["cluster_probs"])
        assert (probs >= pi / 4 - 1e-12).all(), (step, probs / pi)
        if rng.random() < 0.05:
            level = level * 10 ** rng.uniform(-2, 2, 6)
        level = level * np.exp(rng.normal(0, 0.05, 6) - rng.uniform(0, 0.02, 6))
        t = sampler.sample(int(rng.integers(3, 64)))
        k = sampler.cluster_of(t).numpy()
        sampler.observe(torch.tensor(level[k] * rng.lognormal(0, 0.3, k.size)), t)


def test_learning_progress_floor_holds_where_clipping_lifts_the_sum_of_ratios():
    """The case that comes closest to the floor: one cluster flat (ratio clipped up to 1/4), five equally
    improving (ratio 1.2, unclipped), so the sum the proposal is renormalised by exceeds 1 and the flat
    cluster's proposal falls below pi / 4; mixing with eps = 0.2 keeps its draws at about 0.39 pi."""
    clusters = cluster_timesteps(DiscreteSchedule.linear(600), 6)
    sampler = LearningProgressSampler(clusters, total_steps=1000, min_horizon=5, seed=0)
    pi = sampler.base_shares.numpy()
    lowest = 1.0
    for step in range(300):
        probs = np.array(sampler.stats()["cluster_probs"])
        assert (probs >= pi / 4 - 1e-12).all(), (step, probs / pi)
        lowest = min(lowest, probs[0] / pi[0])
        t = sampler.sample(60)
        sampler.observe(torch.where(t < 100, 1.0, math.exp(-step / 100)).double(), t)
    assert 0.3 < lowest < 0.45  # near the bound 0.8 * 0.25 / (1 + 0.25 / 6) + 0.2 = 0.392


def test_learning_progress_state_round_trip_mid_run_reproduces_the_next_100_draws():
    clusters = cluster_timesteps(DiscreteSchedule.linear(300), 3)
    a = LearningProgressSampler(clusters, total_steps=1000, seed=3)
    for step in range(250):  # adapting, well before the anneal
        t = a.sample(60)
        a.observe(_env_losses(t, step, clusters), t)
    assert not np.allclose(a.stats()["cluster_probs"], a.base_shares.numpy())
    b = LearningProgressSampler(clusters, total_steps=1000, seed=99)
    b.load_state_dict(a.state_dict())
    for step in range(250, 350):
        ta, tb = a.sample(60), b.sample(60)
        assert torch.equal(ta, tb), step
        a.observe(_env_losses(ta, step, clusters), ta)
        b.observe(_env_losses(tb, step, clusters), tb)


def test_learning_progress_importance_variant_weights_by_pi_over_p_after_the_anneal():
    clusters = cluster_timesteps(DiscreteSchedule.linear(300), 3)
    sampler = LearningProgressSampler(clusters, total_steps=400, importance_weights=True, seed=1)
    for step in range(400):
        t = sampler.sample(60)
        w = sampler.loss_weights(t)
        if step < 160:
            assert torch.equal(w, torch.ones(60))
        sampler.observe(_env_losses(t, step, clusters), t)
    assert sampler.weight_exponent == 1.0 and sampler.mixing == 0.2
    p = sampler.bin_probs()
    assert not torch.allclose(p, sampler.base_shares)  # still adapting after the anneal window
    t = torch.tensor([0, 150, 299])
    assert torch.allclose(sampler.loss_weights(t).double(), (sampler.base_shares / p).float().double(), rtol=1e-6)


def test_learning_progress_excess_loss_sees_progress_near_a_known_floor():
    """A cluster whose loss creeps to its Bayes floor (1 + 0.2 exp(-s/100)) barely moves in log-loss, but
    its excess over the floor falls fast: with ``optimal_loss`` it gets more than its uniform share."""
    clusters = cluster_timesteps(DiscreteSchedule.linear(200), 2)
    curves = [lambda s: 1.0 + 0.2 * math.exp(-s / 100), lambda s: 1.0 * math.exp(-s / 2000)]
    shares = {}
    for floor in (None, [1.0, 0.0]):
        sampler = LearningProgressSampler(clusters, total_steps=2000, optimal_loss=floor, seed=0)
        for step in range(300):
            t = sampler.sample(40)
            sampler.observe(torch.tensor([curves[int(x >= 100)](step) for x in t], dtype=F64), t)
        shares[floor is None] = sampler.stats()["cluster_probs"][0]
    assert shares[True] < 0.5 < shares[False]


# ----- matched marginal -------------------------------------------------------------------------------
def test_matched_marginal_reproduces_a_finished_runs_cluster_shares(tmp_path):
    """A curriculum 'run' logs its draws per step in metrics.jsonl as the trainer does; the matched
    marginal built from that run folder draws each cluster's time-averaged share to within sampling
    error (stratified draws: within one draw per batch of the expected count)."""
    clusters = cluster_timesteps(DiscreteSchedule.linear(100), 5)
    run = CurriculumSampler(clusters, FixedPacing([30, 20, 20, 10]), "easy_to_hard", seed=1)
    lines = []
    for step in range(1, 201):
        t = run.sample(32)
        run.observe(torch.ones(32), t)
        lines.append(json.dumps({"step": step, "cluster_draws": run.stats(reset=True)["cluster_draws"]}))
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n{half a line")
    shares = matched_shares(tmp_path, 5)
    assert shares[0] < 0.2 < shares[4]  # the easiest cluster was drawn from the start, the hardest last
    matched = MatchedMarginal(clusters, shares=shares, seed=2)
    counts = torch.zeros(5)
    for _ in range(2000):
        before = torch.tensor(matched.stats()["cluster_draws"])
        matched.sample(32)
        step_counts = torch.tensor(matched.stats()["cluster_draws"]) - before
        assert ((step_counts - 32 * torch.tensor(shares)).abs() < 1).all()
        counts += step_counts
    # each batch's count is off by less than one draw, with mean 0: 4 standard deviations of the mean
    tolerance = 4 * math.sqrt(2000 * 0.25) / counts.sum()
    assert torch.allclose(counts / counts.sum(), torch.tensor(shares, dtype=torch.float32), atol=float(tolerance))


# ----- the exact optimal loss of Gaussian-mixture data ------------------------------------------------
def _oracle(objective, gmm, levels):
    """The Bayes-optimal network output E[target | x] of each objective, for one batch of ``levels``."""
    alpha, sigma = (v.to(F64)[:, None] for v in objective.alpha_sigma(levels))

    def model(x_in, time_input, cond):
        x = x_in.to(F64)
        if objective.name == "edm":
            x = x * (sigma**2 + objective.sigma_data**2).sqrt()  # the network sees c_in x
        eps = gmm.optimal_eps(x, alpha[:, 0], sigma[:, 0])
        x0 = (x - sigma * eps) / alpha
        out = {
            "eps": eps,
            "x0": x0,
            "v": alpha * eps - sigma * x0,
            "flow": eps - x0,
            "edm": None,
        }[objective.name]
        if objective.name == "edm":
            sd2 = objective.sigma_data**2
            c_skip, c_out = sd2 / (sigma**2 + sd2), sigma * objective.sigma_data / (sigma**2 + sd2).sqrt()
            out = (x0 - c_skip * x) / c_out
        return out.to(x_in.dtype)

    return model


@pytest.mark.parametrize(
    ("name", "weighting"), [("eps", "none"), ("v", "min_snr"), ("x0", "none"), ("edm", "none"), ("flow", "p2")]
)
def test_optimal_cluster_losses_are_the_loss_of_the_exact_denoiser(name, weighting):
    objective = make_objective(name, num_train_timesteps=100)
    w = make_weighting(weighting)
    gmm = default_gmm(dim=4)
    space = objective.noise_space()
    if isinstance(space, DiscreteSchedule):
        clusters = cluster_timesteps(space, 3)
    else:
        from diffusion_curriculum import cluster_noise_levels

        clusters = cluster_noise_levels(space, 3)
    got = optimal_cluster_losses(
        objective, w, gmm, clusters, n_per_cluster=20_000, generator=torch.Generator().manual_seed(0)
    )
    sampler = MatchedMarginal(
        clusters, shares=[1, 0, 0], density=None if isinstance(space, DiscreteSchedule) else space, seed=0
    )
    g = torch.Generator().manual_seed(1)
    for k in range(3):
        sampler.shares = torch.eye(3, dtype=F64)[k]
        levels = sampler.sample(20_000, dtype=torch.float64)
        x0 = gmm.sample(20_000, g)
        noise = torch.randn(x0.shape, generator=g, dtype=F64)
        loss = objective.loss(_oracle(objective, gmm, levels), x0, levels, noise).to(F64)
        loss = loss * w(objective.snr(levels), objective.target, sigma_data=objective.sigma_data, dtype=F64)
        se = float(loss.std()) / math.sqrt(loss.numel())
        # two independent estimates of the same mean, 20,000 draws each
        assert abs(float(loss.mean()) - got[k]) < 4 * math.sqrt(2) * se, (k, float(loss.mean()), got[k], se)


# ----- config, assembly, CLI -------------------------------------------------------------------------
def test_every_sampler_is_a_config_choice_and_a_cli_choice():
    from diffusion_curriculum.cli import build_parser
    from diffusion_curriculum.config import Config, _leaf_fields

    choices = {key: f.metadata.get("choices") for key, f in _leaf_fields(Config, "")}
    assert choices["curriculum.sampler"] == tuple(SAMPLERS)
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    action = next(a for a in train._actions if a.dest == "sampler")
    assert tuple(action.choices) == tuple(SAMPLERS)
    assert load_config().curriculum.sampler == "curriculum"  # the default is still the paper's curriculum


@pytest.mark.parametrize("name", [s for s in SAMPLERS if s != "curriculum"])
def test_build_sampler_builds_each_sampler_from_the_config(name):
    params = {"matched_marginal": {"shares": [1, 2, 3, 4]}, "learning_progress": {"epsilon": 0.3}}.get(name, {})
    config = load_config(
        overrides={
            "data.dataset": "gmm",
            "curriculum.n_clusters": 4,
            "curriculum.sampler": name,
            "curriculum.sampler_params": params,
            "curriculum.patience": 1,  # refused for the curriculum (a cap-only pacing), ignored by the others
            "curriculum.max_steps_per_stage": 1,
        }
    )
    sampler = build_sampler(config, build_objective(config), rank=0)
    assert isinstance(sampler, SAMPLERS[name]) and sampler.n_clusters == 4
    if name == "learning_progress":
        assert sampler.total_steps == config.train.max_steps and sampler.epsilon == 0.3


@pytest.mark.parametrize(
    ("params", "sampler", "needle"),
    [
        ({"nope": 1}, "speed", "curriculum.sampler_params.nope"),
        ({"epsilon": 2.0}, "learning_progress", "epsilon"),
        ({"total_steps": 5}, "learning_progress", "curriculum.sampler_params.total_steps"),
        ({}, "matched_marginal", "from"),
        ({"from": "/nonexistent/run"}, "matched_marginal", "curriculum.sampler_params.from"),
        ({"shares": [1, 2]}, "matched_marginal", "shares"),
        ({"excess": True}, "learning_progress", "curriculum.sampler_params.excess"),  # digits: no exact density
    ],
)
def test_bad_sampler_params_are_config_errors_naming_the_key(params, sampler, needle):
    with pytest.raises(ConfigError) as info:  # when the config is read, or when the sampler is built
        config = load_config(overrides={"curriculum.sampler": sampler, "curriculum.sampler_params": params})
        build_sampler(config, build_objective(config), rank=0)
    assert needle in str(info.value) and str(info.value).startswith("curriculum.sampler_params")


def test_learning_progress_excess_uses_the_exact_optimal_loss_of_gmm_data():
    config = load_config(
        overrides={
            "data.dataset": "gmm",
            "data.n_samples": 500,
            "curriculum.n_clusters": 4,
            "curriculum.sampler": "learning_progress",
            "curriculum.sampler_params": {"excess": True},
        }
    )
    a = build_sampler(config, build_objective(config), rank=0)
    b = build_sampler(config, build_objective(config), rank=1)
    assert a.optimal_loss is not None and torch.equal(a.optimal_loss, b.optimal_loss)  # the same on every rank
    assert (a.optimal_loss > 0).all() and a.optimal_loss[0] > a.optimal_loss[-1]  # eps loss floor: high at low noise


def test_sampler_options_are_the_constructor_parameters_a_user_sets():
    options = sampler_options("learning_progress")
    assert "total_steps" not in options and "optimal_loss" not in options and "excess" in options
    assert set(sampler_options("matched_marginal")) == {"shares", "from", "until"}
    assert sampler_options("curriculum") == ()
    with pytest.raises(ConfigError, match=r"curriculum\.sampler"):
        load_config(overrides={"curriculum.sampler": "bandit"})
    with pytest.raises(ConfigError, match=r"curriculum\.sampler_params"):
        load_config(overrides={"curriculum.sampler_params": {"a": {"b": 1}}})


def test_edm_and_flow_samplers_draw_on_quantile_clusters():
    for density in (EDMNoise(), FlowMatchingTime(logit_std=1.0)):
        sampler = SpeeD.from_schedule(density, 10, seed=0)
        probs = torch.tensor(sampler.stats()["cluster_probs"])
        # equal-mass clusters: the 7 least noisy ones are 5 times as likely as the 3 noisiest
        assert torch.allclose(probs[:7] / probs[-1], torch.full((7,), 5.0, dtype=probs.dtype), rtol=1e-9)
