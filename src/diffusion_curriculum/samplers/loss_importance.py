"""Importance sampling of the diffusion loss, as in Improved DDPM.

Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models" (ICML 2021, arXiv 2102.09672,
Sec. 3.3 and ``improved_diffusion/resample.py``, ``LossSecondMomentResampler``): draw t with
p_t proportional to the root mean square of the last 10 losses seen at t, mixed with a uniform
0.1%, and weight each loss by 1 / (T p_t) so that the objective stays the uniform one in
expectation; until every t has 10 losses, draw uniformly. Their loss history is all-gathered
across ranks, so that every rank holds the same history; so is ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..distributed import all_gather_cat
from ..errors import UserError
from ..schedules import ContinuousNoise
from .base import check_bool, check_int, check_real
from .cluster import ClusterSampler

__all__ = ["LossImportance"]

_F64 = torch.float64


class LossImportance(ClusterSampler):
    """Improved DDPM's loss-second-moment importance sampling (arXiv 2102.09672), per timestep or per cluster.

    Bins are the single timesteps (``per_timestep``, the default for a discrete schedule, as in the
    paper) or the run's clusters (the only choice for EDM sigma and flow time). Until every bin has
    seen ``history`` losses (10, the paper's), draws follow the base density pi (uniform in t).
    Then bin b is drawn with probability p_b = (1 - ``uniform_prob``) pi_b r_b / sum_c pi_c r_c
    + ``uniform_prob`` pi_b, r_b the root mean square of its last ``history`` losses and
    ``uniform_prob`` = 0.001 (the paper's floor; for timestep bins pi_b = 1/T and this is their
    rule), and every loss is weighted by pi_b / p_b (their 1 / (T p_t)), so that the weighted loss
    is an unbiased estimate of the loss under the base density. Within a bin draws follow the base
    density; every batch is stratified over the bins (a lower-variance draw with the same marginal).

    Losses are taken in (rank, batch) order after an all-gather, so every rank keeps the same history.
    """

    name = "loss_importance"

    def __init__(
        self,
        clusters: Sequence[tuple[float, float]],
        *,
        history: int = 10,
        uniform_prob: float = 0.001,
        per_timestep: bool | None = None,
        density: ContinuousNoise | None = None,
        seed: int = 0,
        rank: int | None = None,
    ) -> None:
        super().__init__(clusters, density=density, seed=seed, rank=rank)
        self.history = check_int("history", history, 1)
        self.uniform_prob = check_real("uniform_prob", uniform_prob, 0.0, 1.0)
        if per_timestep is None:
            per_timestep = self.T is not None
        self.per_timestep = check_bool("per_timestep", per_timestep)
        if self.per_timestep and self.T is None:
            raise UserError("per_timestep: continuous noise levels have no timesteps; use per_timestep=false")
        self._set_bins(self.per_timestep)
        n = self.bin_shares.numel()
        self._hist = torch.zeros(n, self.history, dtype=_F64)
        self._seen = torch.zeros(n, dtype=torch.long)
        self._probs = self.bin_shares.clone()

    @property
    def warmed_up(self) -> bool:
        """Whether every bin has seen ``history`` losses."""
        return bool((self._seen >= self.history).all())

    def bin_probs(self) -> Tensor:
        return self._probs.clone()

    def _update_probs(self) -> None:
        if not self.warmed_up:
            self._probs = self.bin_shares.clone()
            return
        weights = self.bin_shares * self._hist.pow(2).mean(1).sqrt()
        total = float(weights.sum())
        if not total > 0:  # every recent loss was 0: nothing to prefer
            self._probs = self.bin_shares.clone()
            return
        self._probs = (1.0 - self.uniform_prob) * weights / total + self.uniform_prob * self.bin_shares

    def loss_weights(self, levels: Tensor) -> Tensor:
        """pi_b / p_b for each level's bin: 1 / (T p_t) per timestep."""
        bins = self._bin_of(levels)
        w = self.bin_shares[bins] / self._probs[bins]
        return w.reshape(levels.shape).to(device=levels.device, dtype=torch.float32)

    def _learn(self, values: Tensor | None, levels: Tensor | None, sums: Tensor, counts: Tensor) -> None:
        if values is None:
            values, bins = torch.zeros(0, dtype=_F64), torch.zeros(0, dtype=torch.long)
        else:
            bins = self._bin_of(levels)
        values, bins = all_gather_cat(values), all_gather_cat(bins)
        # Append each bin's new losses to its ring of the last `history`, in order: only the last
        # `history` of a bin's new losses can survive, and those land on distinct slots.
        order = torch.argsort(bins, stable=True)
        bins, values = bins[order], values[order]
        counts = torch.bincount(bins, minlength=self._seen.numel())
        first = torch.cumsum(counts, 0) - counts
        rank_in_bin = torch.arange(bins.numel()) - first[bins]
        keep = rank_in_bin >= counts[bins] - self.history
        bins, values, rank_in_bin = bins[keep], values[keep], rank_in_bin[keep]
        self._hist[bins, (self._seen[bins] + rank_in_bin) % self.history] = values
        self._seen += counts
        self._update_probs()

    def _config(self) -> dict[str, Any]:
        return super()._config() | {
            "history": self.history,
            "uniform_prob": self.uniform_prob,
            "per_timestep": self.per_timestep,
        }

    def _state(self) -> dict[str, Any]:
        return {"hist": self._hist.clone(), "seen": self._seen.clone()}

    def _load(self, state: dict[str, Any]) -> None:
        self._hist = state["hist"].clone()
        self._seen = state["seen"].clone()
        self._update_probs()
