"""The curriculum sampler: draws training timesteps (or noise levels) from the unlocked clusters
and moves through the stages as the pacing rule decides.

This is the easy-to-hard training scheme of Kim, Go, Kwon & Kim, "Denoising Task Difficulty-based
Curriculum for Training Diffusion Models" (ICLR 2025, arXiv 2403.10348): with the timesteps split
into clusters C_1 (hardest) .. C_N (easiest) (:mod:`~diffusion_curriculum.clustering`), training
starts on C_N alone and each stage adds the next harder cluster, the denoising tasks of a stage
drawn uniformly from the union of its unlocked clusters; the stage advances when the pacing rule
says so (the paper's adaptive pacing is :class:`~diffusion_curriculum.AdaptivePacing`). Once all
N clusters are unlocked, training goes on uniformly over all timesteps, as in standard diffusion
training. The other orders, the non-cumulative variant and continuous noise levels are ablations
and extensions of this package.

Two further additions make the loss that the pacing watches a measure of the stage's progress
rather than of the minibatch's composition: draws are *stratified* (each unlocked cluster gets its
share of every batch exactly, :func:`~.base.stratified_counts`), and the watched loss is by default the
geometric mean of the unlocked clusters' mean losses (:data:`SIGNALS`), so that every cluster's
loss enters relative to its own level.

:data:`ORDERS` lists the named orders; the contract tests (tests/contract/) run their shared checks
on a sampler for each, over the noise space of every objective. :class:`CurriculumSampler` is the
``curriculum`` entry of the timestep samplers (:mod:`diffusion_curriculum.samplers`), whose protocol it
implements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..clustering import cluster_noise_levels, cluster_timesteps
from ..distributed import all_reduce_sum
from ..errors import UserError
from ..pacing import Pacing
from ..schedules import ContinuousNoise, DiscreteSchedule
from .base import NoiseSpaceSampler, pending_error, stratified_counts

__all__ = ["ORDERS", "SIGNALS", "CurriculumSampler"]

ORDERS = ("easy_to_hard", "hard_to_easy", "random", "none")
SIGNALS = ("geomean", "newest", "mean")
"""The loss a pacing rule watches, from one step's per-sample losses over all ranks:

- ``geomean``: the geometric mean of the unlocked clusters' mean losses. A relative change r of one
  of n clusters' loss moves it by about r / n whatever that cluster's scale, as if each cluster's
  loss were divided by its own level, with no level to estimate; eps-prediction losses differ by
  orders of magnitude across noise levels, and the plain mean would follow the largest alone.
- ``newest``: the mean loss of the cluster unlocked last (the one the stage added).
- ``mean``: the mean over the batch, the paper's "training loss".

Without per-sample timesteps the scalar loss given is watched as it is."""
_STATE_FORMAT = 3
# 1: transitions were (step, stage), AdaptivePacing's EMA was not bias-corrected. 2: a per-rank
# generator state and this rank's statistics. 3: draws seeded by draw_seed, statistics over all ranks.


class CurriculumSampler(NoiseSpaceSampler):
    """Draw timesteps from the unlocked clusters, stratified; advance stages by pacing.

    With ``order="easy_to_hard"`` and ``cumulative=True`` (the defaults) this is the cumulative
    easy-to-hard curriculum of Kim et al. (arXiv 2403.10348): at stage n the draws come from the
    n easiest clusters C_{N-n+1} .. C_N, and after the last stage uniformly from all timesteps.

    ``clusters`` are sorted by noise ascending (cluster 0 = the paper's C_1, hardest). Discrete
    clusters are ``(start, stop)`` integer intervals tiling 0..T-1; continuous ones are float
    intervals tiling ``[density.lo, density.hi]`` and need ``density``, from whose training
    density, truncated to the unlocked clusters, noise levels are drawn.

    Orders: ``easy_to_hard`` (the method: stage 1 is the noisiest cluster only, each stage adds
    the next harder one), ``hard_to_easy`` (anti-curriculum), ``random`` (a fixed order drawn
    from ``seed``, identical on every rank) and ``none`` (uniform over everything from step 0);
    or an explicit order, a permutation of the cluster indices (e.g. one measured by the study).
    Stages are cumulative; with ``cumulative=False`` stage k trains on the k-th cluster of the
    order alone, and a final extra stage unlocks everything. The final stage stays for good.

    Draws are stratified: of a batch of B, each unlocked cluster gets B times its share of the
    unlocked timesteps (or probability mass), the remainder given at random so that every draw is
    still marginally uniform over the union (:func:`~.base.stratified_counts`); within a cluster, draws
    are uniform. A batch comes grouped by cluster. So the per-cluster mix of a batch, and with it
    the loss the pacing watches, does not move with the luck of the draw.

    ``signal`` (one of :data:`SIGNALS`) is the loss the pacing watches; each stage change is
    recorded in :attr:`transitions` as ``(step, new stage, cause)``, the cause being the pacing's
    ``cause`` (None for a pacing without one), and the pacing's ``signal_state()``, when it has one,
    after every step in :meth:`stats` (``"pacing"``).

    Each rank draws its own timesteps: the k-th call of :meth:`sample` uses a generator seeded from
    ``(seed, rank, k)`` (:func:`~.base.draw_seed`). Under ``torch.distributed`` :meth:`observe` sums the
    losses and draws per cluster over all ranks (one all-reduce), so that every rank takes the same
    stage decision at the same step and holds the same state, statistics included: the state one
    rank saves resumes every rank.
    """

    def __init__(
        self,
        clusters: Sequence[tuple[float, float]],
        pacing: Pacing | None = None,
        order: str | Sequence[int] = "easy_to_hard",
        seed: int = 0,
        *,
        cumulative: bool = True,
        density: ContinuousNoise | None = None,
        rank: int | None = None,
        signal: str = "geomean",
    ) -> None:
        clusters = list(clusters)
        if isinstance(order, str):
            if order not in ORDERS:
                raise UserError(f"unknown order {order!r}; choose from {ORDERS} or give a permutation of the clusters")
        else:
            order = [int(i) for i in order]
            if sorted(order) != list(range(len(clusters))):
                raise UserError(f"an explicit order must be a permutation of 0..{len(clusters) - 1}, got {order}")
        if pacing is None and order != "none":
            raise UserError(f"order {order!r} needs a pacing rule (e.g. AdaptivePacing)")
        if signal not in SIGNALS:
            raise UserError(f"unknown signal {signal!r}; choose from {SIGNALS}")
        super().__init__(clusters, density=density, seed=seed, rank=rank)
        self.signal = signal
        self.pacing = pacing
        self.order = order
        self.cumulative = bool(cumulative)
        self.cluster_order = self._cluster_order()
        if order == "none":
            self.n_stages = 1
        else:
            self.n_stages = self.n_clusters if self.cumulative else self.n_clusters + 1
        self.stage = 1
        # (step after which it advanced, new stage, cause)
        self.transitions: list[tuple[int, int, str | None]] = []
        self.pacing_snapshot: dict[str, Any] | None = None  # the pacing's signal_state() after the last step
        n_bins = self.T if self.T is not None else self.n_clusters
        self.draw_counts = torch.zeros(n_bins, dtype=torch.long)  # all ranks' (this rank's since observe)
        self._unsynced_draws = torch.zeros(n_bins, dtype=torch.long)  # this rank's since the last observe
        self._pending: Tensor | None = None  # pooled sums of an accumulated step's micro-batches so far
        self._refresh()

    @classmethod
    def from_schedule(
        cls,
        schedule: DiscreteSchedule | ContinuousNoise,
        n_clusters: int = 20,
        pacing: Pacing | None = None,
        order: str | Sequence[int] = "easy_to_hard",
        seed: int = 0,
        *,
        method: str | None = None,
        **kwargs: Any,
    ) -> CurriculumSampler:
        """Cluster a discrete schedule (``method`` default ``"uniform"``) or a continuous
        density (default ``"quantile"``) and build the sampler on those clusters."""
        if isinstance(schedule, DiscreteSchedule):
            clusters = cluster_timesteps(schedule, n_clusters, method or "uniform")
            return cls(clusters, pacing, order, seed, **kwargs)
        clusters = cluster_noise_levels(schedule, n_clusters, method or "quantile")
        return cls(clusters, pacing, order, seed, density=schedule, **kwargs)

    def _cluster_order(self) -> list[int]:
        n = self.n_clusters
        if not isinstance(self.order, str):
            return list(self.order)
        if self.order == "easy_to_hard":
            return list(range(n - 1, -1, -1))
        if self.order == "hard_to_easy":
            return list(range(n))
        if self.order == "random":
            g = torch.Generator().manual_seed(self.seed)
            return torch.randperm(n, generator=g).tolist()
        return list(range(n))

    # ----- what is unlocked -------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """True once the final stage (everything unlocked) is reached."""
        return self.stage >= self.n_stages

    @property
    def unlocked(self) -> list[int]:
        """Indices of the clusters trained on at the current stage, ascending."""
        if self.finished:
            return list(range(self.n_clusters))
        if self.cumulative:
            return sorted(self.cluster_order[: self.stage])
        return [self.cluster_order[self.stage - 1]]

    @property
    def unlocked_intervals(self) -> list[tuple[Any, Any]]:
        """The unlocked clusters merged into maximal contiguous intervals."""
        merged: list[list[Any]] = []
        for i in self.unlocked:
            a, b = self.clusters[i]
            if merged and merged[-1][1] == a:
                merged[-1][1] = b
            else:
                merged.append([a, b])
        return [(a, b) for a, b in merged]

    def _refresh(self) -> None:
        """Rebuild the lookup tables that :meth:`sample` reads, once per stage change: each unlocked
        cluster's share of a batch and where its draws come from."""
        unlocked = self.unlocked
        self._unlocked_idx = torch.tensor(unlocked)
        if self.T is not None:
            self._starts = torch.tensor([self.clusters[i][0] for i in unlocked])
            self._sizes = torch.tensor([self.clusters[i][1] - self.clusters[i][0] for i in unlocked])
            self._size_sum = int(self._sizes.sum())
        else:
            cdf_lo = self.density.cdf(torch.tensor([self.clusters[i][0] for i in unlocked]))
            cdf_hi = self.density.cdf(torch.tensor([self.clusters[i][1] for i in unlocked]))
            self._cdf_lo = cdf_lo
            self._mass = cdf_hi - cdf_lo
            # Clamp bounds: the icdf round trip may stray ~1e-12 past a cluster's edge.
            self._x_lo = torch.tensor([self.clusters[i][0] for i in unlocked], dtype=torch.float64)
            self._x_hi = torch.tensor([self.clusters[i][1] for i in unlocked], dtype=torch.float64)

    def _quotas(self, batch_size: int) -> Tensor:
        """Each unlocked cluster's expected number of draws in a batch (float64)."""
        if self.T is not None:
            # integer numerators, one division: an exact multiple of the total stays an exact integer
            return (batch_size * self._sizes).to(torch.float64) / self._size_sum
        return batch_size * self._mass / self._mass.sum()

    # ----- the two calls of a training step ----------------------------------------------
    def sample(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``batch_size`` timesteps (LongTensor) or noise levels (``dtype``).

        Draws use the sampler's own stream (:func:`~.base.draw_seed` of its seed, rank and draw counter,
        which :meth:`state_dict` saves) unless a CPU ``generator`` is given. The result is moved
        to ``device``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise UserError(f"batch_size must be an integer >= 0, got {batch_size!r}")
        g = self._generator(generator)
        offset = float(torch.rand((), generator=g, dtype=torch.float64))
        counts = stratified_counts(self._quotas(batch_size), offset)
        j = torch.repeat_interleave(torch.arange(counts.numel()), counts)  # unlocked-cluster slot of each draw
        u = torch.rand(batch_size, generator=g, dtype=torch.float64)
        if self.T is not None:
            within = torch.minimum((u * self._sizes[j]).long(), self._sizes[j] - 1)
            out = self._starts[j] + within
            drawn = torch.bincount(out, minlength=self.T)
        else:
            x = self.density.icdf(self._cdf_lo[j] + u * self._mass[j])
            x = torch.minimum(torch.maximum(x, self._x_lo[j]), self._x_hi[j])
            drawn = torch.bincount(self._unlocked_idx[j], minlength=self.n_clusters)
            out = x.to(dtype)
        self.draw_counts += drawn
        self._unsynced_draws += drawn
        return out if device is None else out.to(device)

    def loss_weights(self, levels: Tensor) -> Tensor:
        """Per-sample factors for the training loss (the timestep-sampler protocol): ones, since the
        curriculum changes which levels are drawn, not how their losses count."""
        return torch.ones(levels.shape, dtype=torch.float32, device=levels.device)

    def observe(self, loss: float | Tensor, timesteps: Tensor | None = None, *, sync: bool = True) -> bool:
        """Feed this step's training loss (scalar or per-sample) to the pacing rule.

        With per-sample losses and their ``timesteps`` the pacing watches the :data:`SIGNALS`
        named by ``signal``, and the mean loss per cluster is recorded for :meth:`stats`; otherwise
        it watches the mean loss. Under ``torch.distributed`` the sums per cluster, and the draws
        since the last step, are taken over all ranks (one all-reduce). Returns True when the stage
        advanced at this step.

        Gradient accumulation: give each micro-batch with ``sync=False`` and the last one of the
        optimizer step with ``sync=True`` (with Accelerate, ``sync=accelerator.sync_gradients``):
        the micro-batches are pooled and the pacing takes one step per optimizer step, exactly as if
        the step's micro-batches had been one batch.
        """
        n = self.n_clusters
        buf = torch.zeros(2 * n + 2, dtype=torch.float64)  # per-cluster sums and counts, total, count
        if isinstance(loss, Tensor):
            flat = loss.detach().flatten()
            if timesteps is not None and flat.numel() > 1:
                self._cluster_sums(flat, timesteps, buf[:n], buf[n : 2 * n])
            buf[-2], buf[-1] = float(flat.to(torch.float64).sum()), flat.numel()
        else:
            buf[-2], buf[-1] = float(loss), 1
        if self._pending is not None:
            buf += self._pending
        if not sync:
            self._pending = buf
            return False
        self._pending = None
        reduced = all_reduce_sum(torch.cat([buf, self._unsynced_draws.to(torch.float64)]))
        buf = reduced[: 2 * n + 2]
        self.draw_counts += reduced[2 * n + 2 :].round().long() - self._unsynced_draws  # the other ranks'
        self._unsynced_draws.zero_()
        self._add_losses(buf[:n], buf[n : 2 * n])
        self.step += 1
        self.pacing_snapshot = None
        if self.finished:
            return False
        watched = self._watched(buf[:n], buf[n : 2 * n], float(buf[-2] / buf[-1]))
        advanced = self.pacing.update(watched, self.stage, self.n_stages)
        signal_state = getattr(self.pacing, "signal_state", None)
        self.pacing_snapshot = signal_state() if signal_state is not None else None
        if advanced:
            self.stage += 1
            self.pacing.reset()
            self.transitions.append((self.step, self.stage, getattr(self.pacing, "cause", None)))
            self._refresh()
        return advanced

    def _watched(self, sums: Tensor, counts: Tensor, mean: float) -> float:
        """The loss the pacing sees (see :data:`SIGNALS`); NaN, which the pacing ignores, when the
        clusters it needs drew nothing this step or a cluster's mean is not positive."""
        if self.signal == "mean" or not bool((counts > 0).any()):
            return mean
        if self.signal == "newest":
            c = self.cluster_order[self.stage - 1]
            return float(sums[c] / counts[c]) if counts[c] > 0 else math.nan
        present = self._unlocked_idx[counts[self._unlocked_idx] > 0]
        means = sums[present] / counts[present]
        if present.numel() == 0 or not bool((means > 0).all()):
            return math.nan
        return float(means.log().mean().exp())

    def _cluster_sums(self, flat: Tensor, timesteps: Tensor, sums: Tensor, counts: Tensor) -> None:
        """Add this rank's per-cluster loss sums and counts to ``sums``/``counts``."""
        if timesteps.numel() != flat.numel():
            raise UserError(f"observe got {flat.numel()} per-sample losses but {timesteps.numel()} timesteps")
        cluster = self.cluster_of(timesteps)
        values = flat.cpu().to(torch.float64)
        sums.index_add_(0, cluster, values)
        counts.index_add_(0, cluster, torch.ones_like(values))

    # ----- logging ------------------------------------------------------------------------
    def stats(self, reset: bool = False) -> dict[str, Any]:
        """Current stage, unlocked range, draw histogram, mean loss per cluster and the pacing's
        view of the last step (``"pacing"``: its ``signal_state()``, e.g. adaptive pacing's smoothed
        signal, best and counter, taken before any reset; None when the pacing did not update).

        The histogram is per timestep (discrete) or per cluster (continuous), ``cluster_draws`` the
        same per cluster; counts and losses accumulate since the last ``reset=True`` call, over all
        ranks (plus this rank's draws since its last :meth:`observe`). ``cluster_probs`` is each
        cluster's probability for the next draw.
        """
        per_cluster = self.draw_counts
        if self.T is not None:
            per_cluster = torch.zeros(self.n_clusters, dtype=torch.long).index_add_(0, self._cluster_of_t, per_cluster)
        probs = torch.zeros(self.n_clusters, dtype=torch.float64)
        probs[self._unlocked_idx] = self._quotas(1)
        out = {
            "step": self.step,
            "stage": self.stage,
            "n_stages": self.n_stages,
            "finished": self.finished,
            "unlocked": self.unlocked,
            "unlocked_intervals": self.unlocked_intervals,
            "draw_counts": self.draw_counts.tolist(),
            "cluster_draws": per_cluster.tolist(),
            "cluster_loss": self._cluster_loss(reset),
            "cluster_probs": probs.tolist(),
            "pacing": None if self.pacing_snapshot is None else dict(self.pacing_snapshot),
        }
        if reset:
            self.draw_counts.zero_()
            self._unsynced_draws.zero_()
        return out

    # ----- exact resume -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: stage, step, pacing, draw counter, statistics. It is
        the same on every rank after :meth:`observe`, so any one rank's restores all of them."""
        if self._pending is not None:
            raise pending_error()
        return {
            "format": _STATE_FORMAT,
            "clusters": [list(c) for c in self.clusters],
            "order": self.order,
            "cumulative": self.cumulative,
            "cluster_order": list(self.cluster_order),
            "stage": self.stage,
            "transitions": [list(t) for t in self.transitions],
            "pacing_snapshot": self.pacing_snapshot,
            "pacing": None if self.pacing is None else self.pacing.state_dict(),
            "draw_counts": self.draw_counts.clone(),
            **self._stream_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` on any rank; refuses a state made for other clusters or order.

        States of earlier formats load: format 1 (before stage changes had a cause) with cause None;
        formats 1 and 2 (a per-rank generator) continue with the stream of draw index ``step``, as
        the generator they saved is not this version's."""
        if "sampler" in state:  # another timestep sampler's (diffusion_curriculum.samplers)
            raise UserError(f"sampler state is of sampler {state['sampler']!r}, not 'curriculum'")
        if state.get("format") not in (1, 2, _STATE_FORMAT):
            raise UserError(f"unsupported sampler state format {state.get('format')!r}")
        for key, mine in (
            ("clusters", [list(c) for c in self.clusters]),
            ("order", self.order),
            ("cumulative", self.cumulative),
            ("cluster_order", self.cluster_order),
        ):
            if state[key] != mine:
                raise UserError(f"sampler state was saved with {key}={state[key]!r}, but this sampler has {mine!r}")
        if not 1 <= int(state["stage"]) <= self.n_stages:
            raise UserError(f"sampler state has stage {state['stage']} outside 1..{self.n_stages}")
        self.stage = int(state["stage"])
        self._load_stream_state(state)
        self.transitions = [(int(t[0]), int(t[1]), t[2] if len(t) > 2 else None) for t in state["transitions"]]
        self.pacing_snapshot = state.get("pacing_snapshot")
        if self.pacing is not None and state["pacing"] is not None:
            self.pacing.load_state_dict(state["pacing"])
        self.draw_counts = state["draw_counts"].clone()
        self._unsynced_draws.zero_()
        self._pending = None
        self._refresh()

    def __repr__(self) -> str:
        kind = f"T={self.T}" if self.T is not None else f"density={self.density!r}"
        return (
            f"CurriculumSampler({self.n_clusters} clusters, {kind}, order={self.order!r}, "
            f"stage={self.stage}/{self.n_stages}, pacing={self.pacing!r})"
        )
