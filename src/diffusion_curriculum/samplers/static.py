"""Static timestep samplers: a fixed density over the base quantile of the noise level.

- :class:`SpeeD`: the asymmetric sampling and change-aware weighting of Wang et al., "A Closer Look at
  Time Steps is Worthy of Triple Speed-Up for Diffusion Model Training" (SpeeD, arXiv 2405.17403).
- :class:`LogitNormal`: the logit-normal time density of Esser et al., "Scaling Rectified Flow
  Transformers for High-Resolution Image Synthesis" (SD3, arXiv 2403.03206).
- :class:`MatchedMarginal`: fixed cluster shares, e.g. the time-averaged shares a finished run used;
  against a curriculum it separates the effect of the order from that of the allocation.

Each is a density over the base quantile u in [0, 1] of a noise level (t / T for DDPM timesteps)
given by its CDF ``G``; a cluster [a, b) gets probability G(b) - G(a) of every batch (stratified) and
its draws follow G restricted to it, so for timesteps P(t) = G((t + 1) / T) - G(t / T) exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..schedules import ContinuousNoise, DiscreteSchedule
from .base import check_bool, check_int, check_real
from .cluster import ClusterSampler

__all__ = ["LogitNormal", "MatchedMarginal", "SpeeD", "time_averaged_shares"]

_F64 = torch.float64


class _DensitySampler(ClusterSampler):
    """A ClusterSampler drawing from the density with CDF :meth:`cdf` over the base quantile."""

    def cdf(self, u: Tensor) -> Tensor:
        """G(u): the sampler's CDF over the base quantile (float64, G(0) = 0, G(1) = 1)."""
        raise NotImplementedError

    def icdf(self, v: Tensor) -> Tensor:
        """G^-1(v), float64."""
        raise NotImplementedError

    def bin_probs(self) -> Tensor:
        g = self.cdf(self.bin_edges)
        return (g[1:] - g[:-1]).clamp(min=0.0)

    def _quantiles(self, bins: Tensor, r: Tensor) -> Tensor:
        g = self.cdf(self.bin_edges)
        lo, hi = g[bins], g[bins + 1]
        u = self.icdf(lo + r * (hi - lo))
        return torch.minimum(torch.maximum(u, self.bin_edges[bins]), self.bin_edges[bins + 1])


class SpeeD(_DensitySampler):
    """SpeeD's asymmetric timestep sampling and (optionally) its change-aware loss weighting.

    Wang et al. (arXiv 2405.17403) split the timesteps at a threshold tau: above it (high noise) lies
    the *convergence area*, where the process increment d sqrt(1 - abar_t) / dt has nearly vanished
    and the losses are low; it is sampled ``ratio`` times less often than the timesteps below tau:
    p(t) proportional to ``ratio`` for t < tau and 1 for t >= tau. Defaults are the published ones
    (NUS-HPC-AI-Lab/SpeeD, ``configs/*/faster.yaml`` and ``configs/ablation/base.yaml``: ``k: 5``,
    ``tau: 700`` of T = 1000, ``lam: 0.6``; the README's first version, ``tanh(1e6 (grad - 1e-4)) +
    1.5``, is the same 5:1 ratio):

    - ``ratio`` = 5 (their k, the suppression intensity);
    - ``threshold`` = 0.7: tau as a fraction of the base quantile (tau = round(0.7 T) timesteps; on
      the linear DDPM schedule with T = 1000 this is where d sqrt(1 - abar) / dt first falls below
      5e-5, the ``meaningful_steps`` of their ``speedit/diffusion/iddpm/speed.py``). For EDM sigma and
      flow time, tau is the same fraction of the training density (a generalisation of ours);
    - ``change_aware`` (their ``weighting: ours``): each loss below tau is weighted by
      (1 - lam) + (2 lam - 1) (g_t - min g) / (max g - min g), with g_t = d(1 - abar_t)/dt (by
      ``np.gradient``-style central differences) and min and max over all t; losses at and above
      tau keep weight 1, as in their ``_weights``. For continuous noise levels 1 - abar is the
      variance-preserving noise share 1 / (1 + SNR), differentiated on a grid of ``grid`` quantiles;
    - ``lam`` = 0.6 (their lambda).

    Their code also pairs each draw t with a "dual" |t - meaningful_steps| (configs ``sampling:
    ours``; ``no_dual`` is their ablation), which changes the marginal density; it is not done here,
    so that the density is the one above. A discrete schedule needs ``schedule`` for the weighting.
    """

    name = "speed"

    def __init__(
        self,
        clusters: Sequence[tuple[float, float]],
        *,
        ratio: float = 5.0,
        threshold: float = 0.7,
        change_aware: bool = True,
        lam: float = 0.6,
        grid: int = 1000,
        schedule: DiscreteSchedule | None = None,
        density: ContinuousNoise | None = None,
        seed: int = 0,
        rank: int | None = None,
    ) -> None:
        super().__init__(clusters, density=density, seed=seed, rank=rank)
        self.ratio = check_real("ratio", ratio, 0.0, math.inf, open_low=True)
        self.threshold = check_real("threshold", threshold, 0.0, 1.0)
        self.change_aware = check_bool("change_aware", change_aware)
        self.lam = check_real("lam", lam, 0.0, 1.0)
        self.grid = check_int("grid", grid, 2)
        # tau on the base quantile: a whole number of timesteps for a discrete schedule
        self.tau = round(self.threshold * self.T) / self.T if self.T is not None else self.threshold
        self._z = self.ratio * self.tau + (1.0 - self.tau)
        self._weights: Tensor | None = None
        if self.change_aware:
            if self.T is not None:
                if not isinstance(schedule, DiscreteSchedule):
                    raise UserError("schedule: SpeeD's change-aware weighting needs the timesteps' DiscreteSchedule")
                if schedule.T != self.T:
                    raise UserError(f"schedule has T={schedule.T}, but the clusters tile {self.T} timesteps")
                noise_share = 1.0 - schedule.alphas_cumprod
                u = torch.arange(self.T, dtype=_F64) / self.T
            else:
                u = (torch.arange(self.grid, dtype=_F64) + 0.5) / self.grid
                noise_share = 1.0 / (1.0 + self.density.snr(self.density.icdf(u)))
            g = torch.gradient(noise_share)[0]
            span = float(g.max() - g.min())
            scaled = (g - g.min()) / span if span > 0 else torch.zeros_like(g)
            weights = (1.0 - self.lam) + (2.0 * self.lam - 1.0) * scaled
            self._weights = torch.where(u < self.tau, weights, torch.ones_like(weights))

    @classmethod
    def from_schedule(
        cls,
        space: DiscreteSchedule | ContinuousNoise,
        n_clusters: int = 20,
        *,
        method: str | None = None,
        **kwargs: Any,
    ) -> SpeeD:
        """:meth:`ClusterSampler.from_schedule`, passing a discrete schedule on as ``schedule``."""
        if isinstance(space, DiscreteSchedule):
            kwargs.setdefault("schedule", space)
        return super().from_schedule(space, n_clusters, method=method, **kwargs)

    def cdf(self, u: Tensor) -> Tensor:
        u = torch.as_tensor(u, dtype=_F64).clamp(0.0, 1.0)
        return (self.ratio * torch.clamp(u, max=self.tau) + torch.clamp(u - self.tau, min=0.0)) / self._z

    def icdf(self, v: Tensor) -> Tensor:
        w = torch.as_tensor(v, dtype=_F64).clamp(0.0, 1.0) * self._z
        below = self.ratio * self.tau
        return torch.where(w < below, w / self.ratio, self.tau + (w - below)).clamp(0.0, 1.0)

    def loss_weights(self, levels: Tensor) -> Tensor:
        """The change-aware weight of each level (ones when ``change_aware`` is off)."""
        if self._weights is None:
            return super().loss_weights(levels)
        x = levels.detach().flatten().cpu()
        if self.T is not None:
            idx = x.long()
        else:
            idx = (self.density.cdf(x.to(_F64)) * self.grid).long().clamp(0, self.grid - 1)
        return self._weights[idx].reshape(levels.shape).to(device=levels.device, dtype=torch.float32)

    def _config(self) -> dict[str, Any]:
        return super()._config() | {
            "ratio": self.ratio,
            "threshold": self.threshold,
            "change_aware": self.change_aware,
            "lam": self.lam,
            "grid": self.grid,
        }


class LogitNormal(_DensitySampler):
    """SD3's logit-normal density over t / T (Esser et al., arXiv 2403.03206, Sec. 3.1): u =
    sigmoid(n), n ~ N(``loc``, ``scale``^2); the paper's best setting and diffusers'
    ``compute_density_for_timestep_sampling`` defaults are ``loc`` = 0, ``scale`` = 1.

    u is the base quantile (t / T for DDPM timesteps, flow time t under the default uniform flow
    density: SD3's own t, t = 1 the noise end, as here). For EDM sigma it is the quantile of the
    log-normal training density (a generalisation of ours).
    """

    name = "logit_normal"

    def __init__(
        self,
        clusters: Sequence[tuple[float, float]],
        *,
        loc: float = 0.0,
        scale: float = 1.0,
        density: ContinuousNoise | None = None,
        seed: int = 0,
        rank: int | None = None,
    ) -> None:
        super().__init__(clusters, density=density, seed=seed, rank=rank)
        self.loc = check_real("loc", loc, -math.inf, math.inf)
        self.scale = check_real("scale", scale, 0.0, math.inf, open_low=True)

    def cdf(self, u: Tensor) -> Tensor:
        u = torch.as_tensor(u, dtype=_F64).clamp(0.0, 1.0)
        return torch.special.ndtr((torch.logit(u) - self.loc) / self.scale)

    def icdf(self, v: Tensor) -> Tensor:
        v = torch.as_tensor(v, dtype=_F64).clamp(0.0, 1.0)
        return torch.sigmoid(self.loc + self.scale * torch.special.ndtri(v))

    def _config(self) -> dict[str, Any]:
        return super()._config() | {"loc": self.loc, "scale": self.scale}


class MatchedMarginal(ClusterSampler):
    """A static allocation: cluster k gets ``shares[k]`` of every batch (stratified), drawn from the
    base density within it.

    With the time-averaged shares a finished run actually drew (its ``cluster_draws`` summed over
    the run, :func:`time_averaged_shares`), this is the *matched marginal* of a curriculum: the same
    allocation without the order, which separates the effect of the order from that of the
    allocation (docs/experiments.md). ``shares`` are normalised to sum to 1.
    """

    name = "matched_marginal"

    def __init__(
        self,
        clusters: Sequence[tuple[float, float]],
        *,
        shares: Sequence[float],
        density: ContinuousNoise | None = None,
        seed: int = 0,
        rank: int | None = None,
    ) -> None:
        super().__init__(clusters, density=density, seed=seed, rank=rank)
        values = [shares] if isinstance(shares, str | bytes) else shares
        try:
            table = torch.as_tensor(list(values), dtype=_F64)
        except (TypeError, ValueError, RuntimeError):
            raise UserError(f"shares must be a sequence of {self.n_clusters} numbers, got {shares!r}") from None
        if table.shape != (self.n_clusters,) or any(isinstance(s, bool) for s in values):
            raise UserError(f"shares must hold one number per cluster ({self.n_clusters}), got {shares!r}")
        if not bool(torch.isfinite(table).all()) or bool((table < 0).any()) or float(table.sum()) <= 0:
            raise UserError(f"shares must be finite, >= 0 and not all 0, got {shares!r}")
        self.shares = table / table.sum()

    def bin_probs(self) -> Tensor:
        return self.shares.clone()

    def _config(self) -> dict[str, Any]:
        return super()._config() | {"shares": self.shares.tolist()}


def time_averaged_shares(cluster_draws: Sequence[Sequence[int]]) -> list[float]:
    """The share of all draws each cluster received, from per-step (or per-log-line) draw counts."""
    rows = [list(r) for r in cluster_draws]
    if not rows or len({len(r) for r in rows}) != 1:
        raise UserError("cluster_draws must be a non-empty list of equally long count lists")
    total = torch.tensor(rows, dtype=_F64).sum(0)
    if not bool(torch.isfinite(total).all()) or bool((total < 0).any()) or float(total.sum()) <= 0:
        raise UserError("cluster_draws must hold non-negative counts and at least one draw")
    return (total / total.sum()).tolist()
