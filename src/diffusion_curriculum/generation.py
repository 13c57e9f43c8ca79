"""Sampling from a trained model of any objective, with optional classifier-free guidance.

The DDPM family (eps, v, x0) samples with diffusers schedulers built from the objective's
scheduler config. EDM and flow integrate their probability-flow ODE, written for both as
dx/dl = (x - D(x; l))/l over a noise level l that falls to 0 (l = sigma for EDM; l = t for flow,
where (x - D)/t is exactly the velocity eps - x0), with Euler or with Heun's method as in EDM's
Algorithm 1 (Euler on the last step, which ends at l = 0).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler
from torch import Tensor
from tqdm.auto import tqdm

from .errors import UserError
from .names import SOLVERS
from .objectives import DDPMObjective, EDMObjective, FlowObjective, Objective

__all__ = ["SOLVERS", "generate", "karras_sigmas"]

_DIFFUSERS_SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "heun": HeunDiscreteScheduler,
}
_ODE_SOLVERS = ("ddim", "euler", "heun")  # "ddim" is Euler on the probability-flow ODE (Karras et al. 2022)


def default_solver(objective_name: str, solver: str) -> str:
    """The solver a configured name means for an objective: EDM and flow have no DDPM/DDIM of their
    own, so a config's default ``ddim`` (or ``ddpm``) becomes their second-order ``heun``."""
    if objective_name in ("edm", "flow") and solver in ("ddpm", "ddim"):
        return "heun"
    return solver


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """EDM's time steps: ``steps`` sigmas from sigma_max to sigma_min, uniform in sigma^(1/rho), then 0."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def _to_device(cond: dict[str, Tensor] | None, device: torch.device | str) -> dict[str, Tensor] | None:
    """A conditioning dict with its tensors moved to ``device``."""
    return None if cond is None else {k: v.to(device) for k, v in cond.items()}


def _batched(uncond: dict[str, Tensor], cond: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """uncond and cond concatenated along the batch dimension, or None where they do not stack."""
    if not isinstance(cond, dict) or uncond.keys() != cond.keys():
        return None
    if any(uncond[k].shape[1:] != cond[k].shape[1:] or uncond[k].dtype != cond[k].dtype for k in cond):
        return None
    return {k: torch.cat([uncond[k], cond[k]]) for k in cond}


def _guided(
    model: Any, uncond: dict[str, Tensor] | None, guidance_scale: float
) -> Callable[[Tensor, Tensor, Any], Tensor]:
    """The model with classifier-free guidance on its output: out_u + s (out_c - out_u)."""
    if uncond is None or guidance_scale == 1.0:
        return model

    def guided(x: Tensor, time_input: Tensor, cond: Any) -> Tensor:
        both = _batched(uncond, cond)
        if both is None:
            out_u, out_c = model(x, time_input, uncond), model(x, time_input, cond)
        else:
            out_u, out_c = model(torch.cat([x, x]), torch.cat([time_input, time_input]), both).chunk(2)
        return out_u + guidance_scale * (out_c - out_u)

    return guided


def _diffusers_scheduler(objective: DDPMObjective, solver: str) -> Any:
    """The diffusers scheduler for ``solver`` with every setting of the objective's training scheduler."""
    # from_config skips the keys listed in "_use_default_values" (settings left at their defaults,
    # such as beta_start/beta_end), so the new class would fall back to *its* defaults:
    # HeunDiscreteScheduler's are 0.00085/0.012, a different noise schedule. Saving a config drops
    # that list as well, so this is what a saved and reloaded config gives.
    config = {k: v for k, v in objective.scheduler.config.items() if k != "_use_default_values"}
    return _DIFFUSERS_SCHEDULERS[solver].from_config(config)


def _sample_diffusers(
    model: Any,
    objective: DDPMObjective,
    x: Tensor,
    solver: str,
    steps: int,
    cond: Any,
    generator: torch.Generator | None,
    progress: bool,
) -> Tensor:
    """Run a diffusers scheduler built from the objective's scheduler config, starting from unit noise x."""
    scheduler = _diffusers_scheduler(objective, solver)
    scheduler.set_timesteps(steps, device=x.device)
    x = x * scheduler.init_noise_sigma  # > 1 for Euler/Heun, whose x is x_t / sqrt(alpha_bar_t)
    # DDPM's step draws its variance noise; DDIM (eta 0), Euler (s_churn 0) and Heun are deterministic.
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for t in tqdm(scheduler.timesteps, desc=f"{solver} sampling", disable=not progress):
        time_input = t.expand(x.shape[0])
        out = model(scheduler.scale_model_input(x, t), time_input, cond)
        x = scheduler.step(out, t, x, **step_kwargs).prev_sample
    return x


def _sample_ode(
    denoise: Callable[[Tensor, Tensor], Tensor], x: Tensor, levels: Tensor, solver: str, progress: bool
) -> Tensor:
    """Integrate dx/dl = (x - D(x; l))/l over the falling ``levels`` (last 0) from x at levels[0]."""
    grid = levels.tolist()
    n = x.shape[0]

    def slope(x: Tensor, level: float) -> Tensor:
        return (x - denoise(x, x.new_full((n,), level))) / level

    for cur, nxt in tqdm(pairwise(grid), total=len(grid) - 1, desc=f"{solver} sampling", disable=not progress):
        d = slope(x, cur)
        x_next = x + (nxt - cur) * d
        if solver == "heun" and nxt > 0:
            x_next = x + (nxt - cur) * 0.5 * (d + slope(x_next, nxt))
        x = x_next
    return x


@torch.no_grad()
def generate(
    model: Any,
    objective: Objective,
    shape: tuple[int, ...],
    n: int,
    *,
    solver: str = "ddim",
    steps: int = 50,
    cond: dict[str, Tensor] | None = None,
    uncond: dict[str, Tensor] | None = None,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Tensor:
    """Draw ``n`` samples of ``shape`` (unclamped, in data space) from ``model`` trained with ``objective``.

    ``cond``/``uncond`` hold tensors with batch dimension ``n``; with ``uncond`` and
    ``guidance_scale != 1`` the model output is guided (classifier-free guidance), in one forward
    pass of 2n where the two dicts stack. All random draws come from ``generator`` (a CPU
    generator: noise is drawn on the CPU and moved to ``device``, by default the model's).
    DDPM-family solvers are diffusers' DDPM, DDIM, Euler and Heun discrete schedulers; EDM uses
    Karras sigmas (rho = 7) and flow a uniform t grid, with Euler or Heun ("ddim" is Euler there).
    A module model is switched to eval mode for the call and restored afterwards.
    """
    if solver not in SOLVERS:
        raise UserError(f"unknown solver {solver!r}; choose from {SOLVERS}")
    if steps < 1 or n < 1:
        raise UserError(f"steps and n must be >= 1, got steps={steps}, n={n}")
    if guidance_scale != 1.0 and uncond is None:
        raise UserError("guidance_scale != 1 needs an uncond (the unconditional model input)")
    if not isinstance(objective, DDPMObjective) and solver not in _ODE_SOLVERS:
        raise UserError(f"solver {solver!r} does not apply to {objective.name!r}; choose from {_ODE_SOLVERS}")
    if device is None:
        param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
        device = torch.device("cpu") if param is None else param.device
    cond, uncond = _to_device(cond, device), _to_device(uncond, device)
    guided = _guided(model, uncond, guidance_scale)
    noise = torch.randn((n, *shape), generator=generator).to(device)

    training = isinstance(model, torch.nn.Module) and model.training
    if training:
        model.eval()
    try:
        if isinstance(objective, DDPMObjective):
            return _sample_diffusers(guided, objective, noise, solver, steps, cond, generator, progress)
        if isinstance(objective, EDMObjective):
            levels = karras_sigmas(steps, objective.sigma_min, objective.sigma_max)
        elif isinstance(objective, FlowObjective):
            levels = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
        else:
            raise TypeError(f"generate does not know the objective {type(objective).__name__}")

        def denoise(x: Tensor, level: Tensor) -> Tensor:
            return objective.predict_x0(guided, x, level, cond)

        return _sample_ode(denoise, noise * levels[0].item(), levels, solver, progress)
    finally:
        if training:
            model.train()
