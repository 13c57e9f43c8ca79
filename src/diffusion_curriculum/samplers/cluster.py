"""The base of the samplers other than the curriculum: a density over the noise space, stratified
over allocation bins.

:class:`ClusterSampler` is the base of these samplers. The noise space is tiled by the run's
clusters (:mod:`~diffusion_curriculum.clustering`); each sampler is a density over the *base
quantile* u in [0, 1] of a noise level (t / T for DDPM timesteps, whose base density is uniform; the
training density's CDF for EDM sigma and flow time). Every batch is stratified over allocation
bins (the clusters, or single timesteps): each bin gets floor or ceil of batch x its probability
(:func:`~.base.stratified_counts`, exactly that in expectation), and within a
bin the draw follows the sampler's density restricted to it, so the marginal of every draw is the
sampler's density. The uniform baseline (``CurriculumSampler`` with order ``none``) is stratified
the same way, so a sampler differs from it in allocation only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..clustering import cluster_noise_levels, cluster_timesteps
from ..distributed import all_reduce_sum
from ..errors import UserError
from ..schedules import ContinuousNoise, DiscreteSchedule
from .base import NoiseSpaceSampler, pending_error, stratified_counts

__all__ = ["ClusterSampler"]

_F64 = torch.float64
_STATE_FORMAT = 2  # 1: a per-rank generator state and this rank's statistics


class ClusterSampler(NoiseSpaceSampler):
    """Base of the samplers that draw every batch stratified over allocation bins of the noise space.

    ``clusters`` are the run's clusters, sorted by noise ascending (cluster 0 the least noisy), as
    :class:`~diffusion_curriculum.CurriculumSampler` takes them: ``(start, stop)`` timestep intervals
    tiling 0..T-1, or float intervals tiling ``[density.lo, density.hi]`` together with the
    ``density`` (the objective's training density). Statistics (draws and mean loss per cluster)
    are kept per cluster; subclasses give the probability of each allocation bin
    (:meth:`bin_probs`) and may draw within a bin from their own density (:meth:`_quantiles`),
    learn from the losses (:meth:`_learn`) and weight the loss (:meth:`loss_weights`).

    Each rank draws its own levels: the k-th call of :meth:`sample` uses a generator seeded from
    ``(seed, rank, k)`` (:func:`~.base.draw_seed`); :meth:`observe` reduces
    the statistics over ranks, so the state is the same on every rank.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        clusters: Sequence[tuple[float, float]],
        *,
        density: ContinuousNoise | None = None,
        seed: int = 0,
        rank: int | None = None,
    ) -> None:
        super().__init__(clusters, density=density, seed=seed, rank=rank)
        if self.T is not None:
            edges = torch.tensor([a for a, _ in self.clusters] + [self.T], dtype=_F64) / self.T
        else:
            edges = density.cdf(torch.tensor([a for a, _ in self.clusters] + [self.clusters[-1][1]], dtype=_F64))
            edges[0], edges[-1] = 0.0, 1.0
        self.cluster_edges = edges  # base quantiles of the cluster boundaries, 0 .. 1
        self.base_shares = edges[1:] - edges[:-1]  # pi: each cluster's share under the base density
        self.stage, self.n_stages = 1, 1
        self.transitions: list[tuple[int, int, str | None]] = []
        self.cluster_draws = torch.zeros(self.n_clusters, dtype=torch.long)  # all ranks' (this rank's since observe)
        self._unsynced_draws = torch.zeros(self.n_clusters, dtype=torch.long)  # this rank's since the last observe
        self._pending: list[tuple[Tensor, Tensor]] = []  # an accumulated step's micro-batches so far
        self._set_bins(per_timestep=False)

    @classmethod
    def from_schedule(
        cls,
        space: DiscreteSchedule | ContinuousNoise,
        n_clusters: int = 20,
        *,
        method: str | None = None,
        **kwargs: Any,
    ) -> ClusterSampler:
        """Cluster a discrete schedule (``method`` default ``"uniform"``) or a continuous density
        (default ``"quantile"``) and build the sampler on those clusters."""
        if isinstance(space, DiscreteSchedule):
            return cls(cluster_timesteps(space, n_clusters, method or "uniform"), **kwargs)
        return cls(cluster_noise_levels(space, n_clusters, method or "quantile"), density=space, **kwargs)

    # ----- bins ------------------------------------------------------------------------------
    def _set_bins(self, per_timestep: bool) -> None:
        """Allocation bins: the clusters, or (discrete only) every timestep alone."""
        if per_timestep:
            if self.T is None:
                raise UserError("per-timestep bins need discrete timesteps")
            self.bin_edges = torch.arange(self.T + 1, dtype=_F64) / self.T
            self._bin_cluster = self._cluster_of_t.clone()
            self._bin_bounds = [(t, t + 1) for t in range(self.T)]
        else:
            self.bin_edges = self.cluster_edges
            self._bin_cluster = torch.arange(self.n_clusters)
            self._bin_bounds = list(self.clusters)
        self.bin_shares = self.bin_edges[1:] - self.bin_edges[:-1]
        lo = torch.tensor([float(a) for a, _ in self._bin_bounds], dtype=_F64)
        hi = torch.tensor([float(b) for _, b in self._bin_bounds], dtype=_F64)
        self._bin_lo, self._bin_hi = lo, hi

    def bin_probs(self) -> Tensor:
        """Each allocation bin's probability for the next draw (float64, sums to 1)."""
        return self.bin_shares.clone()

    def cluster_probs(self) -> Tensor:
        """Each cluster's probability for the next draw (float64, sums to 1)."""
        return torch.zeros(self.n_clusters, dtype=_F64).index_add_(0, self._bin_cluster, self.bin_probs())

    def _bin_of(self, levels: Tensor) -> Tensor:
        """The allocation bin of each level."""
        if len(self._bin_bounds) == self.n_clusters:
            return self.cluster_of(levels)
        return levels.detach().flatten().cpu().long()

    # ----- drawing --------------------------------------------------------------------------
    def _quantiles(self, bins: Tensor, r: Tensor) -> Tensor:
        """Base quantiles of the draws, for uniform ``r`` in [0, 1): by default the base density
        restricted to each bin (uniform in u)."""
        lo, hi = self.bin_edges[bins], self.bin_edges[bins + 1]
        return lo + r * (hi - lo)

    def _levels(self, u: Tensor, bins: Tensor, dtype: torch.dtype) -> Tensor:
        """Noise levels at base quantiles ``u``, each kept inside its bin."""
        lo, hi = self._bin_lo[bins], self._bin_hi[bins]
        if self.T is not None:
            t = torch.floor(u * self.T)
            return torch.minimum(torch.maximum(t, lo), hi - 1).long()
        x = self.density.icdf(u)  # the icdf round trip may stray ~1e-12 past a bin's edge
        return torch.minimum(torch.maximum(x, lo), hi).to(dtype)

    def _allocate(self, batch_size: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """The bin of each of the batch's draws, stratified over the bins (:func:`~.base.stratified_counts`),
        and a uniform number in [0, 1) for each, to place it within its bin."""
        offset = float(torch.rand((), generator=g, dtype=_F64))
        counts = stratified_counts(batch_size * self.bin_probs(), offset)
        bins = torch.repeat_interleave(torch.arange(counts.numel()), counts)
        return bins, torch.rand(batch_size, generator=g, dtype=_F64)

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``batch_size`` timesteps (LongTensor) or noise levels (``dtype``), grouped by bin.

        Draws use the sampler's own stream (seeded from its seed, rank and draw counter, which
        :meth:`state_dict` saves) unless a CPU ``generator`` is given. The result is moved to ``device``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise UserError(f"batch_size must be an integer >= 0, got {batch_size!r}")
        bins, r = self._allocate(batch_size, self._generator(generator))
        levels = self._levels(self._quantiles(bins, r), bins, dtype)
        drawn = torch.bincount(self.cluster_of(levels), minlength=self.n_clusters)
        self.cluster_draws += drawn
        self._unsynced_draws += drawn
        return levels if device is None else levels.to(device)

    def loss_weights(self, levels: Tensor) -> Tensor:
        """Per-sample factors for the training loss (float32, on ``levels``' device): ones here."""
        return torch.ones(levels.shape, dtype=torch.float32, device=levels.device)

    # ----- learning ---------------------------------------------------------------------------
    def observe(self, loss: float | Tensor, timesteps: Tensor | None = None, *, sync: bool = True) -> bool:
        """Record one step's per-sample losses (before :meth:`loss_weights`) with their levels.

        Non-finite losses are left out. Every rank must call this once per step; the per-cluster
        loss sums and counts, and the draws since the last step, are summed over ranks (one
        all-reduce). Under gradient accumulation, give each micro-batch with ``sync=False`` and the
        step's last with ``sync=True`` (with Accelerate, ``sync=accelerator.sync_gradients``): the
        sampler learns once per optimizer step from all of the step's losses, as if they had been
        one batch. Returns False: these samplers have no stages.
        """
        if isinstance(loss, Tensor) and timesteps is not None:
            values = loss.detach().flatten().cpu().to(_F64)
            levels = timesteps.detach().flatten().cpu()
            if levels.numel() != values.numel():
                raise UserError(f"observe got {values.numel()} per-sample losses but {levels.numel()} timesteps")
            keep = torch.isfinite(values)
            self._pending.append((values[keep], levels[keep]))
        if not sync:
            return False
        values = levels = None
        k = self.n_clusters
        buf = torch.zeros(3 * k, dtype=_F64)  # per-cluster loss sums, counts, draws since the last step
        if self._pending:
            values = torch.cat([v for v, _ in self._pending])
            levels = torch.cat([lv for _, lv in self._pending])
            cluster = self.cluster_of(levels)
            buf[:k].index_add_(0, cluster, values)
            buf[k : 2 * k].index_add_(0, cluster, torch.ones_like(values))
        buf[2 * k :] = self._unsynced_draws.to(_F64)
        self._pending = []
        buf = all_reduce_sum(buf)
        sums, counts = buf[:k], buf[k : 2 * k]
        self.cluster_draws += buf[2 * k :].round().long() - self._unsynced_draws  # the other ranks'
        self._unsynced_draws.zero_()
        self._add_losses(sums, counts)
        self.step += 1
        self._learn(values, levels, sums, counts)
        return False

    def _learn(self, values: Tensor | None, levels: Tensor | None, sums: Tensor, counts: Tensor) -> None:
        """Update the sampler's state from one optimizer step: this rank's finite losses and their
        levels (None when the step gave no per-sample losses), and the per-cluster loss ``sums`` and
        ``counts`` of all ranks. A sampler that needs more than those reduces it over ranks here."""

    # ----- stages (none) and logging ------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return True

    @property
    def unlocked(self) -> list[int]:
        return list(range(self.n_clusters))

    @property
    def unlocked_intervals(self) -> list[tuple[Any, Any]]:
        return [(self.clusters[0][0], self.clusters[-1][1])]

    def stats(self, reset: bool = False) -> dict[str, Any]:
        """The step, the draws per cluster and mean loss per cluster since the last ``reset=True``
        (all ranks', plus this rank's draws since its last :meth:`observe`), each cluster's
        probability for the next draw (``cluster_probs``), and the stage view of a sampler without
        stages."""
        out = {
            "step": self.step,
            "stage": self.stage,
            "n_stages": self.n_stages,
            "finished": True,
            "unlocked": self.unlocked,
            "unlocked_intervals": self.unlocked_intervals,
            "cluster_draws": self.cluster_draws.tolist(),
            "cluster_loss": self._cluster_loss(reset),
            "cluster_probs": self.cluster_probs().tolist(),
            "pacing": None,
        }
        if reset:
            self.cluster_draws.zero_()
            self._unsynced_draws.zero_()
        return out

    # ----- exact resume -----------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        """What a saved state must have been made with (its parameters); compared on load."""
        return {"clusters": [list(c) for c in self.clusters]}

    def _state(self) -> dict[str, Any]:
        """The subclass's learned state."""
        return {}

    def _load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`_state`."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: step, draw counter, statistics, learned state. It is
        the same on every rank after :meth:`observe`, so any one rank's restores all of them."""
        if self._pending:
            raise pending_error()
        return {
            "sampler": self.name,
            "format": _STATE_FORMAT,
            "config": self._config(),
            "cluster_draws": self.cluster_draws.clone(),
            **self._stream_state(),
            "state": self._state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` on any rank; refuses a state of another sampler or made with
        other parameters. A state of format 1 (a per-rank generator) continues with the stream of
        draw index ``step``, as the generator it saved is not this version's."""
        if state.get("sampler") != self.name:
            raise UserError(f"sampler state is of sampler {state.get('sampler')!r}, not {self.name!r}")
        if state.get("format") not in (1, _STATE_FORMAT):
            raise UserError(f"unsupported sampler state format {state.get('format')!r}")
        mine = self._config()
        for key, value in mine.items():
            if state["config"].get(key) != value:
                raise UserError(
                    f"sampler state was saved with {key}={state['config'].get(key)!r}, but this sampler has {value!r}"
                )
        self._load_stream_state(state)
        self.cluster_draws = state["cluster_draws"].clone()
        self._unsynced_draws.zero_()
        self._pending = []
        self._load(state["state"])

    def __repr__(self) -> str:
        kind = f"T={self.T}" if self.T is not None else f"density={self.density!r}"
        params = ", ".join(f"{k}={v!r}" for k, v in self._config().items() if k != "clusters")
        return f"{type(self).__name__}({self.n_clusters} clusters, {kind}{', ' + params if params else ''})"
