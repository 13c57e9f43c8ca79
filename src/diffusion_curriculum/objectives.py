"""Training objectives: forward process, prediction target and per-sample loss of each model family.

An :class:`Objective` ties together what a training step needs besides the curriculum: the noise
variable the :class:`~diffusion_curriculum.CurriculumSampler` draws (``noise_space``), the SNR of
those draws for the loss weighting (``snr``, with ``target`` naming the weighting's target), the
noisy input and its regression target (``loss``), the time input fed to the network
(``model_time``), the network's clean-data estimate (``predict_x0``) for generation and
evaluation, and the coefficients of x = alpha x0 + sigma eps (``alpha_sigma``) for exact evaluation.
Levels are integer timesteps (DDPM family), sigmas (EDM) or flow times t; larger is always noisier
(docs/conventions.md).

========  ==================================  ================================  ============
name      noisy input                         network regresses                 time input
========  ==================================  ================================  ============
``eps``   sqrt(a_t) x0 + sqrt(1-a_t) eps      eps                               t
``v``     sqrt(a_t) x0 + sqrt(1-a_t) eps      sqrt(a_t) eps - sqrt(1-a_t) x0    t
``x0``    sqrt(a_t) x0 + sqrt(1-a_t) eps      x0                                t
``edm``   c_in x with x = x0 + sigma eps      (x0 - c_skip x)/c_out             250 ln sigma
``flow``  (1-t) x0 + t eps                    eps - x0                          1000 t
========  ==================================  ================================  ============

:data:`OBJECTIVES` names every objective :func:`make_objective` builds; the contract tests
(tests/contract/) run their shared checks on each name and fail for one without example arguments there.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .errors import UserError
from .names import OBJECTIVES
from .schedules import ContinuousNoise, DiscreteSchedule, EDMNoise, FlowMatchingTime

__all__ = ["OBJECTIVES", "DDPMObjective", "EDMObjective", "FlowObjective", "Objective", "make_objective"]

_PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def _per_sample(values: Tensor, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Shape per-sample ``values`` (B,) as (B, 1, ..., 1) on x's device (in x's dtype unless given)."""
    if values.ndim != 1 or values.shape[0] != x.shape[0]:
        raise UserError(f"levels must have shape ({x.shape[0]},), got {tuple(values.shape)}")
    return values.to(device=x.device, dtype=dtype or x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def _check_sigma_data(sigma_data: Any) -> float:
    """``sigma_data`` as a float after checking that it is a finite number > 0."""
    ok = isinstance(sigma_data, int | float) and not isinstance(sigma_data, bool) and math.isfinite(sigma_data)
    if not (ok and sigma_data > 0):
        raise UserError(f"sigma_data must be a finite number > 0, got {sigma_data!r}")
    return float(sigma_data)


def _batch_levels(levels: Tensor, x: Tensor) -> Tensor:
    """Check that ``levels`` holds one noise level per sample of ``x`` (shape only: no device sync)."""
    if not isinstance(levels, Tensor) or levels.ndim != 1 or levels.shape[0] != x.shape[0]:
        raise UserError(f"levels must have shape ({x.shape[0]},), got {tuple(getattr(levels, 'shape', ()))}")
    return levels


def _levels(levels: Tensor) -> Tensor:
    """Check that ``levels`` is a 1-D tensor of per-sample noise levels and return it."""
    if not isinstance(levels, Tensor) or levels.ndim != 1:
        raise UserError(f"levels must be a 1-D tensor, got {getattr(levels, 'shape', type(levels))}")
    return levels


def _mse(output: Tensor, target: Tensor) -> Tensor:
    """Per-sample float32 mean squared error over all non-batch dimensions."""
    return (output.float() - target.float()).pow(2).flatten(1).mean(1)


class Objective:
    """Base class of the training objectives; one subclass per family (DDPM, EDM, flow)."""

    name: str
    target: str
    sigma_data: float

    def noise_space(self) -> DiscreteSchedule | ContinuousNoise:
        """The noise variable and its training density, for the sampler to cluster and draw from."""
        raise NotImplementedError

    def snr(self, levels: Tensor) -> Tensor:
        """float64 SNR of the drawn levels, on their device, for the loss weighting."""
        raise NotImplementedError

    def model_time(self, levels: Tensor) -> Tensor:
        """The network's time input at these levels."""
        raise NotImplementedError

    def alpha_sigma(self, levels: Tensor) -> tuple[Tensor, Tensor]:
        """float64 (alpha, sigma), each (B,), of the noisy input x = alpha x0 + sigma eps at these levels.

        For evaluation against a known data density (e.g. a Gaussian mixture's optimal denoiser).
        """
        raise NotImplementedError

    def loss(self, model: Any, x0: Tensor, levels: Tensor, noise: Tensor, cond: Any = None) -> Tensor:
        """Per-sample unweighted float32 MSE (B,) on the target; weighting is the caller's."""
        raise NotImplementedError

    def predict_x0(self, model: Any, x: Tensor, levels: Tensor, cond: Any = None) -> Tensor:
        """The model's clean-data estimate from noisy ``x`` at ``levels``, for generation and evaluation."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able configuration: ``make_objective(**objective.config())`` rebuilds this objective."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class DDPMObjective(Objective):
    """Variance-preserving DDPM process from a diffusers ``DDPMScheduler``, predicting eps, v or x0.

    Levels are integer timesteps (LongTensor); the network's time input is the timestep itself.
    The scheduler (``.scheduler``) is built with ``clip_sample=False``: generation must not clamp
    x0 estimates to [-1, 1], since data need not be images in that range.
    """

    def __init__(
        self,
        name: str,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        sigma_data: float = 0.5,
    ) -> None:
        if name not in _PREDICTION_TYPES:
            raise UserError(f"DDPMObjective's name must be one of {tuple(_PREDICTION_TYPES)}, got {name!r}")
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
            raise UserError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}")
        self.name = self.target = name
        self.sigma_data = _check_sigma_data(sigma_data)
        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_schedule = beta_schedule
        self.schedule = DiscreteSchedule.ddpm(beta_schedule, self.num_train_timesteps)
        self._scheduler: Any = None

    @property
    def scheduler(self) -> Any:
        """diffusers' ``DDPMScheduler`` of this schedule, built on first use: importing diffusers takes about a
        second, and what needs only the schedule (``info``, clustering) does without it. Its ``alphas_cumprod``
        are :attr:`schedule`'s (:meth:`~.schedules.DiscreteSchedule.ddpm` computes them as diffusers does)."""
        if self._scheduler is None:
            from diffusers import DDPMScheduler

            self._scheduler = DDPMScheduler(
                num_train_timesteps=self.num_train_timesteps,
                beta_schedule=self.beta_schedule,
                prediction_type=_PREDICTION_TYPES[self.name],
                clip_sample=False,
            )
        return self._scheduler

    def noise_space(self) -> DiscreteSchedule:
        """The scheduler's discrete schedule (timesteps 0..T-1)."""
        return self.schedule

    def snr(self, levels: Tensor) -> Tensor:
        """alpha_bar/(1 - alpha_bar) at the timesteps."""
        return self.schedule.snr.to(levels.device)[levels.long()]

    def model_time(self, levels: Tensor) -> Tensor:
        """The timesteps unchanged, as diffusers models expect."""
        return levels

    def alpha_sigma(self, levels: Tensor) -> tuple[Tensor, Tensor]:
        """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) of the scheduler at the timesteps."""
        a = self.schedule.alphas_cumprod.to(levels.device)[_levels(levels).long()]
        return a.sqrt(), (1 - a).sqrt()

    def loss(self, model: Any, x0: Tensor, levels: Tensor, noise: Tensor, cond: Any = None) -> Tensor:
        """MSE of the network output against eps, v (diffusers ``get_velocity``) or x0."""
        _batch_levels(levels, x0)
        x = self.scheduler.add_noise(x0, noise, levels)
        if self.name == "eps":
            target = noise
        elif self.name == "v":
            target = self.scheduler.get_velocity(x0, noise, levels)
        else:
            target = x0
        return _mse(model(x, self.model_time(levels), cond), target)

    def predict_x0(self, model: Any, x: Tensor, levels: Tensor, cond: Any = None) -> Tensor:
        """Invert the parameterisation: x0 = (x - sqrt(1-a) eps)/sqrt(a), sqrt(a) x - sqrt(1-a) v, or x0."""
        _batch_levels(levels, x)
        out = model(x, self.model_time(levels), cond)
        if self.name == "x0":
            return out
        a = _per_sample(self.schedule.alphas_cumprod.to(levels.device)[levels.long()], x)
        if self.name == "eps":
            return (x - (1 - a).sqrt() * out) / a.sqrt()
        return a.sqrt() * x - (1 - a).sqrt() * out

    def config(self) -> dict[str, Any]:
        """Name, schedule and sigma_data."""
        return {
            "name": self.name,
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "sigma_data": self.sigma_data,
        }


class EDMObjective(Objective):
    """EDM (Karras et al. 2022): x = x0 + sigma eps with the c_skip/c_out/c_in/c_noise preconditioning.

    The network F sees c_in x and regresses (x0 - c_skip x)/c_out with unit weight (EDM's lambda,
    the weighting module's ``edm`` target); the denoiser is D(x) = c_skip x + c_out F.
    """

    name = target = "edm"

    def __init__(
        self,
        sigma_data: float = 0.5,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        p_mean: float = -1.2,
        p_std: float = 1.2,
    ) -> None:
        self.sigma_data = _check_sigma_data(sigma_data)
        self.density = EDMNoise(float(sigma_min), float(sigma_max), float(p_mean), float(p_std))

    @property
    def sigma_min(self) -> float:
        """Smallest training sigma (the end of the generation schedule)."""
        return self.density.sigma_min

    @property
    def sigma_max(self) -> float:
        """Largest training sigma (where generation starts)."""
        return self.density.sigma_max

    def noise_space(self) -> EDMNoise:
        """EDM's log-normal sigma density on [sigma_min, sigma_max]."""
        return self.density

    def snr(self, levels: Tensor) -> Tensor:
        """1/sigma^2."""
        return self.density.snr(levels)

    def model_time(self, levels: Tensor) -> Tensor:
        """1000 c_noise = 250 ln sigma.

        EDM's c_noise = ln(sigma)/4 spans about [-1.6, 1.1]; diffusers' sinusoidal timestep
        embeddings are laid out for inputs in 0..1000, and would barely resolve that range, so the
        network gets c_noise scaled by 1000 (about -1550..1100 at the default sigma range).
        """
        return 250.0 * torch.log(levels.float())

    def alpha_sigma(self, levels: Tensor) -> tuple[Tensor, Tensor]:
        """(1, sigma): x = x0 + sigma eps."""
        sigma = _levels(levels).to(torch.float64)
        return torch.ones_like(sigma), sigma

    def _coefficients(self, levels: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """c_skip, c_out and c_in at these sigmas, shaped to broadcast over x."""
        s = _per_sample(levels, x, torch.float64)
        sd = self.sigma_data
        norm = (s**2 + sd**2).sqrt()
        c_skip, c_out, c_in = sd**2 / norm**2, s * sd / norm, 1 / norm
        return c_skip.to(x.dtype), c_out.to(x.dtype), c_in.to(x.dtype)

    def _network(self, model: Any, x: Tensor, levels: Tensor, cond: Any) -> tuple[Tensor, Tensor, Tensor]:
        """F(c_in x, c_noise) with c_skip and c_out."""
        c_skip, c_out, c_in = self._coefficients(levels, x)
        return model(c_in * x, self.model_time(levels), cond), c_skip, c_out

    def loss(self, model: Any, x0: Tensor, levels: Tensor, noise: Tensor, cond: Any = None) -> Tensor:
        """MSE of F against its effective target (x0 - c_skip x)/c_out."""
        x = x0 + _per_sample(levels, x0) * noise
        out, c_skip, c_out = self._network(model, x, levels, cond)
        return _mse(out, (x0 - c_skip * x) / c_out)

    def predict_x0(self, model: Any, x: Tensor, levels: Tensor, cond: Any = None) -> Tensor:
        """The denoiser D(x; sigma) = c_skip x + c_out F."""
        out, c_skip, c_out = self._network(model, x, levels, cond)
        return c_skip * x + c_out * out

    def config(self) -> dict[str, Any]:
        """Name, sigma_data and the sigma density."""
        d = self.density
        return {
            "name": self.name,
            "sigma_data": self.sigma_data,
            "sigma_min": d.sigma_min,
            "sigma_max": d.sigma_max,
            "p_mean": d.p_mean,
            "p_std": d.p_std,
        }


class FlowObjective(Objective):
    """Flow matching / rectified flow: x_t = (1-t) x0 + t eps, the network regresses the velocity eps - x0."""

    name = target = "flow"

    def __init__(self, sigma_data: float = 0.5, logit_mean: float = 0.0, logit_std: float | None = None) -> None:
        self.sigma_data = _check_sigma_data(sigma_data)
        self.density = FlowMatchingTime(
            logit_mean=float(logit_mean), logit_std=None if logit_std is None else float(logit_std)
        )

    def noise_space(self) -> FlowMatchingTime:
        """Flow time t in [0, 1], uniform or logit-normal."""
        return self.density

    def snr(self, levels: Tensor) -> Tensor:
        """((1-t)/t)^2."""
        return self.density.snr(levels)

    def model_time(self, levels: Tensor) -> Tensor:
        """1000 t, the 0..1000 range of diffusers' timestep embeddings (as in SD3)."""
        return 1000.0 * levels.float()

    def alpha_sigma(self, levels: Tensor) -> tuple[Tensor, Tensor]:
        """(1 - t, t): x_t = (1 - t) x0 + t eps."""
        t = _levels(levels).to(torch.float64)
        return 1 - t, t

    def loss(self, model: Any, x0: Tensor, levels: Tensor, noise: Tensor, cond: Any = None) -> Tensor:
        """MSE of the network output against the velocity eps - x0."""
        t = _per_sample(levels, x0)
        x = (1 - t) * x0 + t * noise
        return _mse(model(x, self.model_time(levels), cond), noise - x0)

    def predict_x0(self, model: Any, x: Tensor, levels: Tensor, cond: Any = None) -> Tensor:
        """x0 = x_t - t v."""
        return x - _per_sample(levels, x) * model(x, self.model_time(levels), cond)

    def config(self) -> dict[str, Any]:
        """Name, sigma_data and the time density."""
        return {
            "name": self.name,
            "sigma_data": self.sigma_data,
            "flow_logit_mean": self.density.logit_mean,
            "flow_logit_std": self.density.logit_std,
        }


def make_objective(
    name: str,
    *,
    num_train_timesteps: int = 1000,
    beta_schedule: str = "linear",
    sigma_data: float = 0.5,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    flow_logit_mean: float = 0.0,
    flow_logit_std: float | None = None,
) -> Objective:
    """Build an objective by name (one of ``OBJECTIVES``); options of the other families are ignored."""
    if name in _PREDICTION_TYPES:
        return DDPMObjective(name, num_train_timesteps, beta_schedule, sigma_data)
    if name == "edm":
        return EDMObjective(sigma_data, sigma_min, sigma_max, p_mean, p_std)
    if name == "flow":
        return FlowObjective(sigma_data, flow_logit_mean, flow_logit_std)
    raise UserError(f"unknown objective {name!r}; choose from {OBJECTIVES}")
