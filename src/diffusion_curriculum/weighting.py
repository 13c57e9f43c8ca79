"""Per-sample loss weights for every prediction target, independent of how timesteps are drawn.

Every weighting is defined once as a weight on the x0-space error ||x0_hat - x0||^2 and turned
into the weight for the chosen target by the exact ratio of squared errors,
``factor(target) = ||target_hat - target||^2 / ||x0_hat - x0||^2``:

=========  ============================================  ====================================
target     what the network's loss compares              factor(snr)
=========  ============================================  ====================================
``eps``    noise                                         snr
``v``      v = alpha eps - sigma x0 (variance preserving) snr + 1
``x0``     clean data                                    1
``edm``    EDM's F (D = c_skip x + c_out F)              1/sigma_data^2 + snr  (= EDM lambda)
``flow``   velocity eps - x0, x_t = (1-t) x0 + t eps     (1 + sqrt(snr))^2     (= 1/t^2)
=========  ============================================  ====================================

x0-space weights: Min-SNR-gamma min(snr, gamma) (Hang et al. 2023, arXiv 2303.09556); soft-min-SNR
gamma snr/(gamma + snr), which is k-diffusion's ``soft-min-snr`` (sigma sigma_d)^2/(sigma^2 + sigma_d^2)^2
on F when gamma = 1/sigma_d^2; P2 snr/(k + snr)^gamma (Choi et al. 2022, arXiv 2204.00227:
1/(k + snr)^gamma on eps); EDM lambda(sigma) = 1/sigma_data^2 + snr (Karras et al. 2022,
arXiv 2206.00364). ``none`` is weight 1 on whatever target is trained.

:data:`WEIGHTINGS` registers every weighting by name; the contract tests (tests/contract/) run their
shared checks on each entry and every target in :data:`TARGETS`.

SNR is clamped to [1e-30, 1e30] in float64 before any division, so zero-terminal SNR (0) and a
clean t=0 (inf) give the finite limits instead of NaN or inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .errors import UserError

__all__ = [
    "P2",
    "TARGETS",
    "WEIGHTINGS",
    "EDMWeighting",
    "MinSNR",
    "SoftMinSNR",
    "Unweighted",
    "Weighting",
    "make_weighting",
    "target_factor",
]

TARGETS = ("eps", "v", "x0", "edm", "flow")
_SNR_MIN, _SNR_MAX = 1e-30, 1e30


def _clamped_snr(snr: Tensor) -> Tensor:
    snr = torch.as_tensor(snr).to(torch.float64)
    if torch.isnan(snr).any() or (snr < 0).any():
        raise UserError("snr must be >= 0 and not NaN")
    return snr.clamp(_SNR_MIN, _SNR_MAX)


def _is_real(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_sigma_data(sigma_data: Any) -> None:
    if not (_is_real(sigma_data) and sigma_data > 0):
        raise UserError(f"sigma_data must be a finite number > 0, got {sigma_data!r}")


def target_factor(snr: Tensor, target: str, sigma_data: float = 0.5) -> Tensor:
    """||target error||^2 / ||x0 error||^2 at the given SNR (float64); see the module table."""
    _check_sigma_data(sigma_data)
    snr = _clamped_snr(snr)
    if target == "eps":
        return snr
    if target == "v":
        return snr + 1.0
    if target == "x0":
        return torch.ones_like(snr)
    if target == "edm":
        return 1.0 / sigma_data**2 + snr
    if target == "flow":
        return (1.0 + snr.sqrt()) ** 2
    raise UserError(f"unknown target {target!r}; choose from {TARGETS}")


class Weighting:
    """Base class: subclasses give the x0-space weight; calling gives target-space weights."""

    def x0_weight(self, snr: Tensor, sigma_data: float) -> Tensor:
        raise NotImplementedError

    def target_weight(self, snr: Tensor, target: str, sigma_data: float) -> Tensor:
        """float64 weights on the ``target`` MSE for clamped float64 ``snr``."""
        return self.x0_weight(snr, sigma_data) / target_factor(snr, target, sigma_data)

    def __call__(
        self,
        snr: Tensor,
        target: str,
        *,
        sigma_data: float = 0.5,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Per-sample weights for the MSE on ``target`` at these SNRs, on ``snr``'s device."""
        _check_sigma_data(sigma_data)
        device = torch.as_tensor(snr).device
        w = self.target_weight(_clamped_snr(snr), target, sigma_data)
        return w.to(device=device, dtype=dtype)


@dataclass(frozen=True)
class Unweighted(Weighting):
    """Weight 1 on the trained target: the plain MSE of that parameterisation."""

    def target_weight(self, snr: Tensor, target: str, sigma_data: float) -> Tensor:
        target_factor(snr, target, sigma_data)  # validates the target name
        return torch.ones_like(snr)


def _positive(name: str, value: Any) -> None:
    if not (_is_real(value) and value > 0):
        raise UserError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class MinSNR(Weighting):
    """Min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
    Strategy", arXiv 2303.09556): x0-space weight min(snr, gamma)."""

    gamma: float = 5.0

    def __post_init__(self) -> None:
        _positive("gamma", self.gamma)

    def x0_weight(self, snr: Tensor, sigma_data: float) -> Tensor:
        return snr.clamp(max=self.gamma)


@dataclass(frozen=True)
class SoftMinSNR(Weighting):
    """Soft-min-SNR: x0-space weight gamma snr/(gamma + snr), a smooth min(snr, gamma).

    gamma = 4 is k-diffusion's choice (gamma = 1/sigma_data^2 with sigma_data = 0.5).
    """

    gamma: float = 4.0

    def __post_init__(self) -> None:
        _positive("gamma", self.gamma)

    def x0_weight(self, snr: Tensor, sigma_data: float) -> Tensor:
        return self.gamma * snr / (self.gamma + snr)


@dataclass(frozen=True)
class P2(Weighting):
    """P2 (Choi et al. 2022, "Perception Prioritized Training of Diffusion Models", arXiv 2204.00227):
    eps-space weight 1/(k + snr)^gamma, i.e. x0-space snr/(k + snr)^gamma."""

    k: float = 1.0
    gamma: float = 1.0

    def __post_init__(self) -> None:
        _positive("k", self.k)
        if not (_is_real(self.gamma) and self.gamma >= 0):
            raise UserError(f"gamma must be a finite number >= 0, got {self.gamma!r}")

    def x0_weight(self, snr: Tensor, sigma_data: float) -> Tensor:
        return snr * (self.k + snr) ** -self.gamma


@dataclass(frozen=True)
class EDMWeighting(Weighting):
    """EDM's lambda(sigma) = (sigma^2 + sigma_data^2)/(sigma sigma_data)^2 on the x0 error
    (= 1 on the ``edm`` target), from Karras et al. 2022, "Elucidating the Design Space of
    Diffusion-Based Generative Models" (arXiv 2206.00364). sigma_data comes from the call, shared
    with the target."""

    def x0_weight(self, snr: Tensor, sigma_data: float) -> Tensor:
        return 1.0 / sigma_data**2 + snr


# The registry of weightings by name, read by make_weighting and the config; the contract tests in
# tests/contract/ run their checks on every entry (and fail for one without example parameters there).
WEIGHTINGS: dict[str, type[Weighting]] = {
    "none": Unweighted,
    "min_snr": MinSNR,
    "soft_min_snr": SoftMinSNR,
    "p2": P2,
    "edm": EDMWeighting,
}


def make_weighting(name: str, **params: Any) -> Weighting:
    """Build a weighting by name (``none``, ``min_snr``, ``soft_min_snr``, ``p2``, ``edm``)."""
    if name not in WEIGHTINGS:
        raise UserError(f"unknown weighting {name!r}; choose from {tuple(WEIGHTINGS)}")
    try:
        return WEIGHTINGS[name](**params)
    except TypeError as exc:
        raise UserError(f"bad parameters for weighting {name!r}: {params}") from exc
