"""Generation against an analytic optimal model for Gaussian data: every objective and solver."""

import pytest
import torch

from diffusion_curriculum.generation import SOLVERS, _diffusers_scheduler, generate, karras_sigmas
from diffusion_curriculum.objectives import make_objective

F64 = torch.float64
MU, S = torch.tensor([1.0, -0.5]), 0.7  # data N(MU, S^2 I); S differs from sigma_data = 0.5 on purpose


class GaussianOracle(torch.nn.Module):
    """The exact optimal network for data N(mu, s^2 I), with mu taken from cond["mu"] when given.

    For x = alpha x0 + sigma eps, E[x0 | x] = mu + s^2 alpha/(alpha^2 s^2 + sigma^2) (x - alpha mu);
    the output is that estimate in the objective's parameterisation, read off the time input.
    """

    def __init__(self, objective, mu=MU, s=S):
        super().__init__()
        self.objective, self.mu, self.s = objective, mu, s
        self.batch_sizes, self.modes = [], []

    def _alpha_sigma(self, time_input):
        obj, t = self.objective, time_input.to(F64)
        if obj.name == "edm":
            sigma = torch.exp(t / 250)
            return torch.ones_like(sigma), sigma
        if obj.name == "flow":
            return 1 - t / 1000, t / 1000
        # Euler/Heun discrete evaluate at fractional t, interpolating sqrt((1-a)/a) linearly in t.
        ac = obj.scheduler.alphas_cumprod.to(F64)
        ve = ((1 - ac) / ac).sqrt()
        lo = t.floor().long().clamp(max=len(ac) - 2)
        ve = ve[lo] + (t - lo) * (ve[lo + 1] - ve[lo])
        return 1 / (1 + ve**2).sqrt(), ve / (1 + ve**2).sqrt()

    def forward(self, x_in, time_input, cond):
        self.batch_sizes.append(x_in.shape[0])
        self.modes.append(self.training)
        obj = self.objective

        def bc(v):
            return v.reshape(-1, *([1] * (x_in.ndim - 1)))

        alpha, sigma = (bc(c) for c in self._alpha_sigma(time_input))
        sd = obj.sigma_data
        x = x_in.to(F64) * ((sigma**2 + sd**2).sqrt() if obj.name == "edm" else 1)
        mu = (self.mu if cond is None else cond["mu"]).to(F64)
        x0 = mu + self.s**2 * alpha / (alpha**2 * self.s**2 + sigma**2) * (x - alpha * mu)
        eps = (x - alpha * x0) / sigma
        out = {
            "eps": lambda: eps,
            "v": lambda: alpha * eps - sigma * x0,
            "x0": lambda: x0,
            "flow": lambda: eps - x0,
            "edm": lambda: (x0 - sd**2 / (sigma**2 + sd**2) * x) / (sigma * sd / (sigma**2 + sd**2).sqrt()),
        }[obj.name]()
        return out.to(x_in.dtype)


CASES = [(name, solver) for name in ("eps", "v", "x0") for solver in SOLVERS] + [
    (name, solver) for name in ("edm", "flow") for solver in ("ddim", "euler", "heun")
]


@pytest.mark.parametrize(("name", "solver"), CASES)
def test_samples_have_the_data_mean_and_std(name, solver):
    obj = make_objective(name)
    out = generate(
        GaussianOracle(obj),
        obj,
        (2,),
        2000,
        solver=solver,
        steps=100,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == (2000, 2) and out.dtype == torch.float32
    assert (out.mean(0) - MU).abs().max() < 0.1
    assert ((out.std(0) - S).abs() / S).max() < 0.1


@pytest.mark.parametrize("solver", SOLVERS)
def test_diffusers_schedulers_keep_the_training_noise_schedule(solver):
    obj = make_objective("v", beta_schedule="linear")
    scheduler = _diffusers_scheduler(obj, solver)
    torch.testing.assert_close(scheduler.alphas_cumprod, obj.scheduler.alphas_cumprod)
    assert scheduler.config.prediction_type == "v_prediction"
    assert not getattr(scheduler.config, "clip_sample", False)


def test_image_shaped_samples():
    obj = make_objective("edm")
    oracle = GaussianOracle(obj, mu=torch.tensor(0.5))
    out = generate(oracle, obj, (1, 8, 8), 64, solver="heun", steps=20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (64, 1, 8, 8)
    assert abs(out.mean().item() - 0.5) < 0.05 and abs(out.std().item() - S) / S < 0.1


def test_karras_sigmas():
    sigmas = karras_sigmas(18, 0.002, 80.0)
    assert sigmas.shape == (19,) and sigmas[-1] == 0
    torch.testing.assert_close(sigmas[[0, 17]], torch.tensor([80.0, 0.002], dtype=F64))
    assert (sigmas[1:] < sigmas[:-1]).all()
    torch.testing.assert_close(sigmas[:-1] ** (1 / 7), torch.linspace(80.0 ** (1 / 7), 0.002 ** (1 / 7), 18, dtype=F64))


CFG_CASES = [("eps", "ddim"), ("edm", "heun"), ("flow", "euler")]


@pytest.mark.parametrize(("name", "solver"), CFG_CASES)
def test_guidance(name, solver):
    obj = make_objective(name)
    n = 500
    cond = {"mu": torch.tensor([2.0, 0.0]).expand(n, 2)}
    uncond = {"mu": torch.zeros(n, 2)}

    def run(oracle=None, **kwargs):
        return generate(
            oracle or GaussianOracle(obj),
            obj,
            (2,),
            n,
            solver=solver,
            steps=50,
            generator=torch.Generator().manual_seed(1),
            **kwargs,
        )

    plain = run(cond=cond)
    assert torch.equal(run(cond=cond, uncond=uncond, guidance_scale=1.0), plain)
    assert run(cond=cond, uncond=uncond, guidance_scale=0.0).mean(0).abs().max() < 0.1
    oracle = GaussianOracle(obj)
    guided = run(oracle, cond=cond, uncond=uncond, guidance_scale=3.0)
    assert set(oracle.batch_sizes) == {2 * n}  # one batched forward per evaluation
    assert guided.mean(0)[0] > plain.mean(0)[0] + 0.5  # pushed further toward the cond mean
    assert abs(guided.mean(0)[1]) < 0.1

    oracle = GaussianOracle(obj)
    unstacked = {"mu": uncond["mu"], "dropped": torch.ones(n)}  # keys differ: two forwards of n
    torch.testing.assert_close(run(oracle, cond=cond, uncond=unstacked, guidance_scale=3.0), guided)
    assert set(oracle.batch_sizes) == {n}


@pytest.mark.parametrize(("name", "solver"), [("eps", "ddpm"), ("v", "heun"), ("edm", "heun"), ("flow", "euler")])
def test_same_seed_same_samples(name, solver):
    obj = make_objective(name)

    def run(seed):
        return generate(
            GaussianOracle(obj),
            obj,
            (2,),
            16,
            solver=solver,
            steps=10,
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_model_is_evaluated_in_eval_mode_and_restored():
    obj = make_objective("flow")
    oracle = GaussianOracle(obj).train()
    generate(oracle, obj, (2,), 4, solver="heun", steps=3, progress=True)
    assert oracle.modes == [False] * 5 and oracle.training  # Heun: 2 steps - 1 evaluations per step


def test_bad_solvers_and_arguments():
    for name in ("edm", "flow"):
        obj = make_objective(name)
        with pytest.raises(ValueError, match="ddim"):
            generate(GaussianOracle(obj), obj, (2,), 4, solver="ddpm")
    obj = make_objective("eps")
    with pytest.raises(ValueError, match="unknown solver"):
        generate(GaussianOracle(obj), obj, (2,), 4, solver="dpm")
    with pytest.raises(ValueError, match="uncond"):
        generate(GaussianOracle(obj), obj, (2,), 4, cond={"mu": torch.zeros(4, 2)}, guidance_scale=2.0)
