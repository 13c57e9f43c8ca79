"""The learning-progress sampler: spend samples where the loss is moving, without locking any level out.

The project's own sampler (issue 16). Kim et al.'s curriculum (arXiv 2403.10348) locks the hard,
low-noise clusters out and lets a hand-set patience unlock them; the samplers with reported speed-ups
reallocate samples instead (SpeeD, arXiv 2405.17403; Improved DDPM's importance sampling, arXiv
2102.09672; VDM++'s adaptive noise density, arXiv 2303.00848). This one reallocates towards the
clusters whose loss changes fastest per sample drawn, the learning-progress signal of teacher-student
curricula (Matiisen et al., arXiv 1707.00183: the slope of each task's learning curve, in absolute
value so that forgetting counts too) and of Graves et al.'s automated curricula (arXiv 1704.03003), and
anneals to the uniform density for the last part of the run, so that the model ends trained on the
uniform objective.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..schedules import ContinuousNoise
from .base import check_bool, check_int, check_real
from .cluster import ClusterSampler

__all__ = ["LearningProgressSampler"]

_F64 = torch.float64


class LearningProgressSampler(ClusterSampler):
    """Allocate each batch over the clusters by learning progress per sample; uniform at the end.

    State (identical on every rank: it is updated from per-cluster loss sums and counts all-reduced
    over ranks, 2K numbers a step): per cluster, a fast and a slow exponential moving average of the
    loss sum and of the count, with horizons H_f = max(``min_horizon``, ``horizon_fraction`` x
    ``total_steps``) and H_s = ``slow_multiple`` x H_f (decay 1 - 1/H), and an EMA with horizon H_s of
    the cluster's share of the draws. After every step, with pi the base shares (the uniform
    density's):

    - levels l_f = log(sum_f / count_f) and l_s likewise; log space makes the rule blind to each
      cluster's loss scale, hence to the eps / v / x0 parameterisation. With ``optimal_loss`` (a
      known Bayes-optimal loss per cluster, e.g. for Gaussian-mixture data) the level is the excess
      loss mean - optimal, floored at ``excess_floor`` x mean so that its log stays finite;
    - progress P_k = |l_s - l_f| (the absolute value catches forgetting), value
      V_k = P_k / max(share_k, ``share_floor`` x pi_k) (progress per sample drawn);
    - proposal q_k = pi_k clip(V_k / sum_j pi_j V_j, 1/``clip``, ``clip``), renormalised (a cluster
      without a level yet gets ratio 1);
    - draws from (1 - eps) q + eps pi, eps = ``epsilon`` until ``anneal_start`` of the run, rising
      linearly to 1 at ``anneal_end``, so exactly pi afterwards; the first H_s steps draw pi to fill
      the statistics. Draws are stratified by cluster (base density within a cluster).

    No cluster gets less than pi / 4: clipping raises the pi-weighted sum of the ratios (1 before
    clipping) by at most 1/clip, so the renormalised q_k >= pi_k / (clip + 1) = pi_k / 5, and
    (1 - eps) / 5 + eps >= 1/4 for every eps >= 1/16. (So the sampling shares stay above pi / 4 too,
    and ``share_floor`` only binds with a smaller ``epsilon`` or a larger ``clip``.)

    ``importance_weights=True`` is the variant that keeps adapting after the anneal: eps stays
    ``epsilon``, and over the anneal window the losses get importance weights (pi_k / p_k)^rho, rho
    rising linearly from 0 to 1, p the drawn density; from ``anneal_end`` on the weighted loss is an
    unbiased estimate of the uniform objective.

    Defaults are the design of issue 16, not measured optima: ``min_horizon`` 20,
    ``horizon_fraction`` 0.01, ``slow_multiple`` 4, ``share_floor`` 1/4, ``clip`` 4, ``epsilon``
    0.2, ``anneal_start`` 0.4,
    ``anneal_end`` 0.6; ``excess_floor`` 0.001 is ours (it bounds the excess's log at about 7 below the
    loss's, and only matters once noise has put the averaged loss at its floor). The share EMA uses
    the slow horizon because progress is a difference of the slow and the fast EMA, which spans about
    H_s steps. ``total_steps`` is the run's length (``train.max_steps``).
    """

    name = "learning_progress"

    def __init__(
        self,
        clusters: Sequence[tuple[float, float]],
        *,
        total_steps: int,
        min_horizon: int = 20,
        horizon_fraction: float = 0.01,
        slow_multiple: float = 4.0,
        share_floor: float = 0.25,
        clip: float = 4.0,
        epsilon: float = 0.2,
        anneal_start: float = 0.4,
        anneal_end: float = 0.6,
        importance_weights: bool = False,
        optimal_loss: Sequence[float] | None = None,
        excess_floor: float = 0.001,
        density: ContinuousNoise | None = None,
        seed: int = 0,
        rank: int | None = None,
    ) -> None:
        super().__init__(clusters, density=density, seed=seed, rank=rank)
        self.total_steps = check_int("total_steps", total_steps, 1)
        self.min_horizon = check_int("min_horizon", min_horizon, 1)
        self.horizon_fraction = check_real("horizon_fraction", horizon_fraction, 0.0, 1.0)
        self.slow_multiple = check_real("slow_multiple", slow_multiple, 1.0, math.inf, open_low=True)
        self.share_floor = check_real("share_floor", share_floor, 0.0, 1.0, open_low=True)
        self.clip = check_real("clip", clip, 1.0, math.inf)
        self.epsilon = check_real("epsilon", epsilon, 0.0, 1.0)
        self.anneal_start = check_real("anneal_start", anneal_start, 0.0, 1.0)
        self.anneal_end = check_real("anneal_end", anneal_end, 0.0, 1.0)
        if self.anneal_end < self.anneal_start:
            raise UserError(f"anneal_end ({anneal_end!r}) must not be before anneal_start ({anneal_start!r})")
        self.importance_weights = check_bool("importance_weights", importance_weights)
        self.excess_floor = check_real("excess_floor", excess_floor, 0.0, 1.0, open_low=True)
        self.optimal_loss: Tensor | None = None
        if optimal_loss is not None:
            try:
                table = torch.as_tensor(list(optimal_loss), dtype=_F64)
            except (TypeError, ValueError, RuntimeError):
                raise UserError(f"optimal_loss must be one number per cluster, got {optimal_loss!r}") from None
            if table.shape != (self.n_clusters,) or not bool(torch.isfinite(table).all()) or bool((table < 0).any()):
                raise UserError(f"optimal_loss must be {self.n_clusters} finite numbers >= 0, got {optimal_loss!r}")
            self.optimal_loss = table
        self.fast_horizon = max(self.min_horizon, round(self.horizon_fraction * self.total_steps))
        self.slow_horizon = self.slow_multiple * self.fast_horizon
        self.warmup = math.ceil(self.slow_horizon)
        k = self.n_clusters
        self._fast_sum, self._fast_count = torch.zeros(k, dtype=_F64), torch.zeros(k, dtype=_F64)
        self._slow_sum, self._slow_count = torch.zeros(k, dtype=_F64), torch.zeros(k, dtype=_F64)
        self._share = self.base_shares.clone()
        self._progress = torch.zeros(k, dtype=_F64)
        self._probs = self.base_shares.clone()

    # ----- the rule ---------------------------------------------------------------------------
    def _fraction(self) -> float:
        """Where in the anneal window the next step is: 0 before ``anneal_start``, 1 from ``anneal_end``."""
        f = self.step / self.total_steps
        if f >= self.anneal_end:
            return 1.0
        if f < self.anneal_start:
            return 0.0
        return (f - self.anneal_start) / (self.anneal_end - self.anneal_start)

    @property
    def mixing(self) -> float:
        """eps of the next draw: 1 (the base density) during warm-up and after the anneal."""
        if self.step < self.warmup:
            return 1.0
        if self.importance_weights:
            return self.epsilon
        return self.epsilon + (1.0 - self.epsilon) * self._fraction()

    @property
    def weight_exponent(self) -> float:
        """rho of the next step's importance weights (0 without ``importance_weights``)."""
        return self._fraction() if self.importance_weights else 0.0

    def _levels_log(self, sums: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
        """log level per cluster and whether it is defined."""
        mean = sums / counts.clamp(min=1e-300)
        level = mean
        if self.optimal_loss is not None:
            level = torch.maximum(mean - self.optimal_loss, self.excess_floor * mean)
        valid = (counts > 0) & (mean > 0) & torch.isfinite(mean)
        return torch.where(valid, level, torch.ones_like(level)).log(), valid

    def proposal(self) -> Tensor:
        """q from the current statistics (float64, sums to 1); also records the progress P."""
        pi = self.base_shares
        fast, fast_ok = self._levels_log(self._fast_sum, self._fast_count)
        slow, slow_ok = self._levels_log(self._slow_sum, self._slow_count)
        valid = fast_ok & slow_ok
        self._progress = torch.where(valid, (slow - fast).abs(), torch.zeros_like(fast))
        value = self._progress / torch.maximum(self._share, self.share_floor * pi)
        mass = float(pi[valid].sum())
        mean_value = float((pi * value)[valid].sum()) / mass if mass > 0 else 0.0
        if mean_value > 0 and math.isfinite(mean_value):
            ratio = torch.where(valid, value / mean_value, torch.ones_like(value))
        else:  # no cluster moved (or none has a level yet): nothing to prefer
            ratio = torch.ones_like(value)
        q = pi * ratio.clamp(1.0 / self.clip, self.clip)
        return q / q.sum()

    def _update_probs(self) -> None:
        eps = self.mixing
        if eps >= 1.0:
            self._probs = self.base_shares.clone()
        else:
            self._probs = (1.0 - eps) * self.proposal() + eps * self.base_shares

    def bin_probs(self) -> Tensor:
        return self._probs.clone()

    def loss_weights(self, levels: Tensor) -> Tensor:
        """(pi_k / p_k)^rho for each level's cluster (ones while rho is 0)."""
        rho = self.weight_exponent
        if rho == 0.0:
            return super().loss_weights(levels)
        k = self.cluster_of(levels)
        w = (self.base_shares[k] / self._probs[k]).pow(rho)
        return w.reshape(levels.shape).to(device=levels.device, dtype=torch.float32)

    def _learn(self, values: Tensor | None, levels: Tensor | None, sums: Tensor, counts: Tensor) -> None:
        fast, slow = 1.0 - 1.0 / self.fast_horizon, 1.0 - 1.0 / self.slow_horizon
        self._fast_sum = fast * self._fast_sum + sums
        self._fast_count = fast * self._fast_count + counts
        self._slow_sum = slow * self._slow_sum + sums
        self._slow_count = slow * self._slow_count + counts
        total = float(counts.sum())
        if total > 0:
            self._share = slow * self._share + (1.0 - slow) * counts / total
        self._update_probs()

    # ----- logging and resume ------------------------------------------------------------------
    def stats(self, reset: bool = False) -> dict[str, Any]:
        """:meth:`ClusterSampler.stats` plus the last ``progress`` P per cluster and the ``mixing`` eps."""
        return super().stats(reset) | {"progress": self._progress.tolist(), "mixing": self.mixing}

    def _config(self) -> dict[str, Any]:
        return super()._config() | {
            "total_steps": self.total_steps,
            "min_horizon": self.min_horizon,
            "horizon_fraction": self.horizon_fraction,
            "slow_multiple": self.slow_multiple,
            "share_floor": self.share_floor,
            "clip": self.clip,
            "epsilon": self.epsilon,
            "anneal_start": self.anneal_start,
            "anneal_end": self.anneal_end,
            "importance_weights": self.importance_weights,
            "optimal_loss": None if self.optimal_loss is None else self.optimal_loss.tolist(),
            "excess_floor": self.excess_floor,
        }

    def _state(self) -> dict[str, Any]:
        return {
            "fast_sum": self._fast_sum.clone(),
            "fast_count": self._fast_count.clone(),
            "slow_sum": self._slow_sum.clone(),
            "slow_count": self._slow_count.clone(),
            "share": self._share.clone(),
            "progress": self._progress.clone(),
            "probs": self._probs.clone(),
        }

    def _load(self, state: dict[str, Any]) -> None:
        self._fast_sum = state["fast_sum"].clone()
        self._fast_count = state["fast_count"].clone()
        self._slow_sum = state["slow_sum"].clone()
        self._slow_count = state["slow_count"].clone()
        self._share = state["share"].clone()
        self._progress = state["progress"].clone()
        self._probs = state["probs"].clone()
