"""Variance-optimal importance sampling over noise-level bins, with nothing to tune.

Importance sampling keeps the uniform objective when every loss is weighted by pi_b / p_b (pi the base
density's share of bin b, p_b the sampler's), and the variance of that estimate is smallest when p_b is
proportional to pi_b times the root mean square of the weighted quantity in the bin (the classical optimal
importance density, e.g. Owen, "Monte Carlo theory, methods and examples", 2013, Sec. 9.1; Improved DDPM's
loss-second-moment resampler, Nichol & Dhariwal, arXiv 2102.09672, Sec. 3.3, is the same rule per timestep).
What this sampler changes, and why:

- **Bins are the run's clusters**, not single timesteps: Improved DDPM waits for 10 losses at each of 1,000
  timesteps (about 300 steps at batch 64) and draws uniformly until then, which is where a short run's target
  is decided. Here each bin's second moment is a running mean from its first loss on, over the same amount of
  evidence as theirs once warm: a window of ``history`` x (the bin's timesteps) losses (their 10 per
  timestep, pooled over the bin; for continuous noise levels, the bin's share of 1,000 steps).
- **The floor comes from the effective sample size**, not a constant: the draw density is mixed with the
  base density just enough that the weights' effective sample size is at least ``min_ess`` of the batch
  (one half, the usual threshold of sequential Monte Carlo, Kong, Liu & Wong 1994), so no weight can grow
  without bound while the estimate is young; Improved DDPM's 0.1% floor allows weights up to 1,000.
- **Stratified over the global batch**: every rank reads one grid of draws stratified over all ranks' draws
  (a shared stream) and keeps every R-th draw, so that ranks do not draw the same bins by chance.

Always importance-weighted: the training objective is the uniform one in expectation, from the first step.

**Balanced** (``balance=True``, the one variant): the same rule for another objective, sum_b pi_b log L_b (L_b
bin b's mean loss), whose gradient is sum_b pi_b grad L_b / L_b: every noise level counts equally in relative
terms, which is what the verdict's balanced-denoising endpoint (E2) measures. It is EDM2's learned uncertainty
weighting at its optimum (Karras et al., "Analyzing and Improving the Training Dynamics of Diffusion Models",
arXiv 2312.02696: loss / exp(u) + u over u is smallest at u = log E[loss], where the weight is 1 / E[loss]),
with the running means in place of a learned u. The base density pi becomes pi_b / L_b (normalised), and
everything above follows with it: draws proportional to that base times the root mean square loss, ESS mixing
with that base, weights base_b / p_b (mean 1 under the draws).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..distributed import all_reduce_sum
from ..errors import UserError
from ..schedules import ContinuousNoise
from .base import check_int, check_real, draw_seed
from .cluster import ClusterSampler

__all__ = ["VarianceImportance", "ess_fraction", "mix_for_ess"]

_F64 = torch.float64
_STEPS_OF_A_CONTINUOUS_SPACE = 1000  # DDPM's T: continuous bins count their share of it as timesteps


def ess_fraction(base: Tensor, probs: Tensor) -> float:
    """The effective sample size, as a fraction of the draws, of importance weights w_b = base_b / probs_b
    under draws from ``probs``: (E w)^2 / E w^2 = 1 / sum_b base_b^2 / probs_b (E w = 1)."""
    return float(1.0 / (base.pow(2) / probs).sum())


def mix_for_ess(base: Tensor, target: Tensor, min_ess: float) -> float:
    """The smallest lambda in [0, 1] for which the mixture (1 - lambda) target + lambda base has weights of
    effective sample size at least ``min_ess`` (:func:`ess_fraction`). The ESS rises monotonically with
    lambda (sum_b base_b^2 / p_b is convex in lambda with a zero derivative at lambda = 1), so bisection on
    it finds the smallest such lambda to float64 precision."""
    if ess_fraction(base, target) >= min_ess:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if ess_fraction(base, (1.0 - mid) * target + mid * base) >= min_ess:
            hi = mid
        else:
            lo = mid
    return hi


class VarianceImportance(ClusterSampler):
    """Variance-optimal importance sampling over the run's clusters (see the module's notes).

    Bin b (cluster b) is drawn with probability p_b = (1 - lambda) q_b + lambda pi_b, q_b proportional to
    pi_b sqrt(m2_b), m2_b the running mean of the squared loss in the bin over its last ``history`` x (bin's
    timesteps) losses (a bin not yet seen takes the pi-weighted mean of those seen), and lambda the least
    mixing with the base density pi that keeps the weights' effective sample size at least ``min_ess``
    (:func:`mix_for_ess`). Every loss is weighted by pi_b / p_b. Until any loss is seen, p = pi.

    With ``balance``, pi is replaced by the balanced base density pi_b / m1_b (normalised; m1_b the running mean
    loss in the bin over the same window, a bin not yet seen taking the pi-weighted mean of those seen), which
    makes the weighted loss an estimate of the gradient of sum_b pi_b log L_b (see the module's notes).

    Losses are reduced over ranks in ``observe`` (per-bin sums, sums of squares and counts), so every rank holds the
    same state; draws come from one stream shared by the ``world_size`` ranks (None: torch.distributed's, else
    1), stratified over the global batch, each rank keeping every ``world_size``-th draw from its rank on.
    """

    name = "variance_importance"

    def __init__(
        self,
        clusters: Sequence[tuple[float, float]],
        *,
        history: int = 10,
        min_ess: float = 0.5,
        balance: bool = False,
        density: ContinuousNoise | None = None,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(clusters, density=density, seed=seed, rank=rank)
        self.history = check_int("history", history, 1)
        self.min_ess = check_real("min_ess", min_ess, 0.0, 1.0, open_low=True)
        if not isinstance(balance, bool):
            raise UserError(f"balance must be true or false, got {balance!r}")
        self.balance = balance
        if world_size is None:
            world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.world_size = check_int("world_size", world_size, 1)
        if self.rank >= self.world_size:
            raise UserError(f"rank {self.rank} is not below world_size {self.world_size}")
        steps = self.T if self.T is not None else _STEPS_OF_A_CONTINUOUS_SPACE
        self.horizon = (self.history * steps * self.bin_shares).round().clamp(min=1.0)  # losses per bin's window
        self._m1 = torch.zeros(self.n_clusters, dtype=_F64)
        self._m2 = torch.zeros(self.n_clusters, dtype=_F64)
        self._seen = torch.zeros(self.n_clusters, dtype=torch.long)
        self._update_probs()

    # ----- the draw density and the weights -------------------------------------------------------
    @staticmethod
    def _filled(values: Tensor, seen: Tensor, pi: Tensor) -> Tensor:
        """``values`` of the bins seen, the pi-weighted mean of those for the bins not yet seen."""
        fill = float((pi[seen] * values[seen]).sum() / pi[seen].sum())
        return torch.where(seen, values, torch.full_like(values, fill))

    def _update_probs(self) -> None:
        seen = self._seen > 0
        pi = self.bin_shares
        self._base = pi.clone()
        if not bool(seen.any()):
            self._probs, self.mix = pi.clone(), 1.0
            return
        if self.balance:
            m1 = self._filled(self._m1, seen, pi)
            if bool((m1 > 0).all()):  # a bin whose every loss was 0 leaves the uniform objective's base
                self._base = pi / m1 / (pi / m1).sum()
        target = self._base * self._filled(self._m2, seen, pi).sqrt()
        if not float(target.sum()) > 0:  # every loss so far was 0: nothing to prefer
            self._probs, self.mix = self._base.clone(), 1.0
            return
        target = target / target.sum()
        self.mix = mix_for_ess(self._base, target, self.min_ess)
        self._probs = (1.0 - self.mix) * target + self.mix * self._base

    def bin_probs(self) -> Tensor:
        return self._probs.clone()

    @property
    def max_weight(self) -> float:
        """The largest loss weight the current density gives, base_b / p_b."""
        return float((self._base / self._probs).max())

    def loss_weights(self, levels: Tensor) -> Tensor:
        """base_b / p_b for each level's bin (pi_b / p_b unless balanced), from the density the levels were drawn
        with."""
        bins = self._bin_of(levels)
        w = self._base[bins] / self._probs[bins]
        return w.reshape(levels.shape).to(device=levels.device, dtype=torch.float32)

    # ----- drawing: one stratified grid over the global batch ----------------------------------------
    def _generator(self, generator: torch.Generator | None) -> torch.Generator:
        """``generator`` when given, else the next draw of the stream every rank shares (rank 0's seed)."""
        if generator is not None:
            return generator
        g = torch.Generator().manual_seed(draw_seed(self.seed, 0, self.draws))
        self.draws += 1
        return g

    def _allocate(self, batch_size: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """The global batch of ``world_size`` x ``batch_size`` draws, stratified over the bins, of which this
        rank keeps every ``world_size``-th from its rank on (each rank's share spread over the bins)."""
        bins, r = super()._allocate(batch_size * self.world_size, g)
        mine = slice(self.rank, batch_size * self.world_size, self.world_size)
        return bins[mine], r[mine]

    # ----- learning -----------------------------------------------------------------------------------
    def _learn(self, values: Tensor | None, levels: Tensor | None, sums: Tensor, counts: Tensor) -> None:
        """Fold the step's losses and squared losses (all ranks') into each bin's running means over its window."""
        squares = torch.zeros(self.n_clusters, dtype=_F64)
        if values is not None and values.numel():
            squares.index_add_(0, self._bin_of(levels), values.pow(2))
        squares = all_reduce_sum(squares)
        new = counts.round().long()
        got = new > 0
        if bool(got.any()):
            n = new.to(_F64)
            # A running mean while the window is not full, an exponential one over the window after: the
            # new losses' mean gets weight k / min(seen + k, window) (1 when k fills the window alone).
            rate = n / torch.maximum(n, torch.minimum(self._seen.to(_F64) + n, self.horizon))
            self._m1 = torch.where(got, self._m1 + rate * (sums / n.clamp(min=1.0) - self._m1), self._m1)
            self._m2 = torch.where(got, self._m2 + rate * (squares / n.clamp(min=1.0) - self._m2), self._m2)
            self._seen += new
        self._update_probs()

    # ----- exact resume --------------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return super()._config() | {"history": self.history, "min_ess": self.min_ess, "balance": self.balance}

    def _state(self) -> dict[str, Any]:
        return {"m1": self._m1.clone(), "m2": self._m2.clone(), "seen": self._seen.clone()}

    def _load(self, state: dict[str, Any]) -> None:
        self._m1 = state["m1"].clone()
        self._m2 = state["m2"].clone()
        self._seen = state["seen"].clone()
        self._update_probs()
