"""Noise schedules: discrete DDPM time, continuous EDM sigma and flow-matching time.

One convention holds across the package: the *easy* end is the *noisy* end.
Large t (discrete), large sigma (EDM) and large t (flow matching, x_t = (1-t) x0 + t eps)
all mean more noise, lower SNR and an easier denoising task. Clusters are therefore always
sorted by noise ascending: cluster 0 (the paper's C_1) is the hardest, the last the easiest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .errors import UserError

__all__ = [
    "BETA_SCHEDULES",
    "ContinuousNoise",
    "DiscreteSchedule",
    "EDMNoise",
    "FlowMatchingTime",
]

_F64 = torch.float64
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")  # DiscreteSchedule.ddpm's, diffusers' names


class DiscreteSchedule:
    """A DDPM-style schedule of T steps given by its cumulative alpha product.

    ``alphas_cumprod[t]`` is the signal variance at step t (x_t = sqrt(a_t) x0 + sqrt(1-a_t) eps);
    it must lie in [0, 1] and be non-increasing in t. All attributes are float64 tensors indexed
    by t. SNR is ``a/(1-a)``: ``inf`` where a = 1 and ``0`` where a = 0 (zero terminal SNR).
    """

    def __init__(self, alphas_cumprod: Tensor) -> None:
        ac = torch.as_tensor(alphas_cumprod).detach().to("cpu", _F64).flatten()
        if ac.numel() < 1:
            raise UserError("alphas_cumprod must hold at least one step")
        if not torch.isfinite(ac).all() or (ac < 0).any() or (ac > 1).any():
            raise UserError("alphas_cumprod must be finite and lie in [0, 1]")
        if (ac[1:] > ac[:-1]).any():
            raise UserError("alphas_cumprod must be non-increasing in t (t=0 is the clean end)")
        self.alphas_cumprod: Tensor = ac
        self.T: int = ac.numel()
        with torch.no_grad():
            self.snr: Tensor = ac / (1.0 - ac)
            self.log_snr: Tensor = torch.log(ac) - torch.log1p(-ac)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Tensor) -> DiscreteSchedule:
        """Wrap an existing schedule, e.g. a diffusers scheduler's ``alphas_cumprod``."""
        return cls(alphas_cumprod)

    @classmethod
    def from_betas(cls, betas: Tensor) -> DiscreteSchedule:
        """Build from per-step betas: ``alphas_cumprod = cumprod(1 - betas)``."""
        betas = torch.as_tensor(betas, dtype=_F64)
        if (betas < 0).any() or (betas > 1).any():
            raise UserError("betas must lie in [0, 1]")
        return cls(torch.cumprod(1.0 - betas, dim=0))

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> DiscreteSchedule:
        """The DDPM schedule (Ho et al. 2020): betas linear in t."""
        _check_T(T)
        return cls.from_betas(torch.linspace(beta_start, beta_end, T, dtype=_F64))

    @classmethod
    def scaled_linear(cls, T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> DiscreteSchedule:
        """Stable Diffusion's schedule: sqrt(beta) linear in t (diffusers ``scaled_linear``)."""
        _check_T(T)
        return cls.from_betas(torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=_F64) ** 2)

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> DiscreteSchedule:
        """Nichol & Dhariwal (2021): alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) pi/2), betas capped.

        Matches diffusers ``squaredcos_cap_v2``.
        """
        _check_T(T)
        steps = torch.arange(T + 1, dtype=_F64) / T
        alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
        return cls.from_betas(betas)

    @classmethod
    def ddpm(cls, beta_schedule: str = "linear", T: int = 1000) -> DiscreteSchedule:
        """The schedule the trainer's DDPM objectives use: diffusers' ``DDPMScheduler(num_train_timesteps=T,
        beta_schedule=...)`` with its default betas (1e-4 to 0.02), computed as it computes them, in float32.

        Built here without importing diffusers (a second of start-up), so that ``info`` and ``clusters`` show the
        SNRs training sees: float32 puts SNR at t = 0 near 9997 where the float64 :meth:`linear` gives 9999.
        ``beta_schedule`` is ``linear``, ``scaled_linear`` (sqrt-beta linear) or ``squaredcos_cap_v2`` (the
        cosine schedule); tests/test_first_hour.py checks every one bit for bit against diffusers.
        """
        _check_T(T)
        if beta_schedule == "linear":
            betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float32)
        elif beta_schedule == "scaled_linear":
            betas = torch.linspace(1e-4**0.5, 0.02**0.5, T, dtype=torch.float32) ** 2
        elif beta_schedule == "squaredcos_cap_v2":

            def alpha_bar(t: float) -> float:
                return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

            betas = torch.tensor(
                [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)], dtype=torch.float32
            )
        else:
            raise UserError(f"unknown beta_schedule {beta_schedule!r}: choose from {', '.join(BETA_SCHEDULES)}")
        return cls(torch.cumprod(1.0 - betas, dim=0))

    def __repr__(self) -> str:
        first, last = self.snr[0].item(), self.snr[-1].item()
        return f"DiscreteSchedule(T={self.T}, snr[0]={first:.4g}, snr[T-1]={last:.4g})"


def _check_T(T: int) -> None:
    if not isinstance(T, int) or T < 1:
        raise UserError(f"T must be a positive integer, got {T!r}")


class ContinuousNoise(Protocol):
    """A continuous noise variable x in [lo, hi] (larger = noisier) with its training density.

    ``cdf``/``icdf`` describe the training density on [lo, hi]; clustering by quantiles and the
    curriculum sampler's truncated draws use them.
    """

    lo: float
    hi: float

    def cdf(self, x: Tensor) -> Tensor: ...

    def icdf(self, u: Tensor) -> Tensor: ...

    def snr(self, x: Tensor) -> Tensor: ...


def _ndtr(z: Tensor) -> Tensor:
    return torch.special.ndtr(z)


def _ndtri(p: Tensor) -> Tensor:
    return torch.special.ndtri(p)


@dataclass(frozen=True)
class EDMNoise:
    """EDM noise levels (Karras et al. 2022): ln sigma ~ N(p_mean, p_std^2), truncated to
    [sigma_min, sigma_max]; x = x0 + sigma eps, so SNR = 1/sigma^2 (with unit-variance data).

    The truncation changes nothing measurable at the defaults (both tails lie beyond 4 std).
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    p_mean: float = -1.2
    p_std: float = 1.2

    def __post_init__(self) -> None:
        if not (0 < self.sigma_min < self.sigma_max) or not math.isfinite(self.sigma_max):
            raise UserError("EDMNoise needs 0 < sigma_min < sigma_max < inf")
        if not (math.isfinite(self.p_std) and self.p_std > 0):
            raise UserError(f"EDMNoise needs a finite p_std > 0, got {self.p_std!r}")
        if not math.isfinite(self.p_mean):
            raise UserError(f"EDMNoise needs a finite p_mean, got {self.p_mean!r}")

    @property
    def lo(self) -> float:
        return self.sigma_min

    @property
    def hi(self) -> float:
        return self.sigma_max

    def _z(self, sigma: Tensor) -> Tensor:
        return (torch.log(torch.as_tensor(sigma, dtype=_F64)) - self.p_mean) / self.p_std

    def _bounds(self) -> tuple[Tensor, Tensor]:
        lo = _ndtr(self._z(torch.tensor(self.sigma_min, dtype=_F64)))
        hi = _ndtr(self._z(torch.tensor(self.sigma_max, dtype=_F64)))
        return lo, hi

    def cdf(self, x: Tensor) -> Tensor:
        """P(sigma <= x) under the truncated log-normal; float64."""
        lo, hi = self._bounds()
        x = torch.as_tensor(x, dtype=_F64).clamp(self.sigma_min, self.sigma_max)
        return ((_ndtr(self._z(x)) - lo) / (hi - lo)).clamp(0.0, 1.0)

    def icdf(self, u: Tensor) -> Tensor:
        """Inverse of :meth:`cdf`; float64, clamped to [sigma_min, sigma_max]."""
        lo, hi = self._bounds()
        p = lo + torch.as_tensor(u, dtype=_F64) * (hi - lo)
        sigma = torch.exp(self.p_mean + self.p_std * _ndtri(p))
        return sigma.clamp(self.sigma_min, self.sigma_max)

    def snr(self, x: Tensor) -> Tensor:
        return torch.as_tensor(x, dtype=_F64) ** -2


@dataclass(frozen=True)
class FlowMatchingTime:
    """Flow-matching time t in [0, 1] with x_t = (1 - t) x0 + t eps (t = 1 is pure noise).

    SNR = ((1 - t)/t)^2. The training density is uniform (``logit_std=None``) or logit-normal:
    t = sigmoid(N(logit_mean, logit_std^2)), as in SD3 and diffusers'
    ``compute_density_for_timestep_sampling`` (whose u counts the other way: their u -> 0 is
    our t -> 1; see docs/conventions.md).
    """

    logit_mean: float = 0.0
    logit_std: float | None = None
    lo: float = 0.0
    hi: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.lo < self.hi <= 1.0):
            raise UserError("FlowMatchingTime needs 0 <= lo < hi <= 1")
        if self.logit_std is not None and not (math.isfinite(self.logit_std) and self.logit_std > 0):
            raise UserError(f"FlowMatchingTime needs a finite logit_std > 0 (or None), got {self.logit_std!r}")
        if not math.isfinite(self.logit_mean):
            raise UserError(f"FlowMatchingTime needs a finite logit_mean, got {self.logit_mean!r}")

    def _raw_cdf(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=_F64)
        if self.logit_std is None:
            return t.clamp(0.0, 1.0)
        return _ndtr((torch.logit(t) - self.logit_mean) / self.logit_std)

    def _raw_icdf(self, p: Tensor) -> Tensor:
        p = torch.as_tensor(p, dtype=_F64)
        if self.logit_std is None:
            return p
        return torch.sigmoid(self.logit_mean + self.logit_std * _ndtri(p))

    def cdf(self, x: Tensor) -> Tensor:
        lo, hi = self._raw_cdf(torch.tensor(self.lo)), self._raw_cdf(torch.tensor(self.hi))
        x = torch.as_tensor(x, dtype=_F64).clamp(self.lo, self.hi)
        return ((self._raw_cdf(x) - lo) / (hi - lo)).clamp(0.0, 1.0)

    def icdf(self, u: Tensor) -> Tensor:
        lo, hi = self._raw_cdf(torch.tensor(self.lo)), self._raw_cdf(torch.tensor(self.hi))
        p = lo + torch.as_tensor(u, dtype=_F64) * (hi - lo)
        return self._raw_icdf(p).clamp(self.lo, self.hi)

    def snr(self, x: Tensor) -> Tensor:
        t = torch.as_tensor(x, dtype=_F64)
        return ((1.0 - t) / t) ** 2
