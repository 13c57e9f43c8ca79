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

:data:`ORDERS` lists the named orders; the contract tests (tests/contract/) run their shared checks
on a sampler for each, over the noise space of every objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .clustering import cluster_noise_levels, cluster_timesteps, validate_discrete_clusters
from .errors import UserError
from .pacing import Pacing
from .schedules import ContinuousNoise, DiscreteSchedule

__all__ = ["ORDERS", "CurriculumSampler", "rank_seed"]

ORDERS = ("easy_to_hard", "hard_to_easy", "random", "none")
_STATE_FORMAT = 1


def rank_seed(seed: int, rank: int) -> int:
    """A well-mixed 64-bit seed for (seed, rank), so every rank draws its own timesteps."""
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, dtype=np.uint64)[0])


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class CurriculumSampler:
    """Draw timesteps uniformly from the union of unlocked clusters; advance stages by pacing.

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

    Each rank draws from its own generator, seeded from ``(seed, rank)``; under
    ``torch.distributed`` :meth:`observe` averages the loss over all ranks, so that every rank
    takes the same stage decision at the same step.
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
    ) -> None:
        self.clusters: list[tuple[Any, Any]] = [tuple(c) for c in clusters]
        if isinstance(order, str):
            if order not in ORDERS:
                raise UserError(f"unknown order {order!r}; choose from {ORDERS} or give a permutation of the clusters")
        else:
            order = [int(i) for i in order]
            if sorted(order) != list(range(len(self.clusters))):
                raise UserError(f"an explicit order must be a permutation of 0..{len(self.clusters) - 1}, got {order}")
        if pacing is None and order != "none":
            raise UserError(f"order {order!r} needs a pacing rule (e.g. AdaptivePacing)")
        self.density = density
        if density is None:
            self.T: int | None = validate_discrete_clusters(self.clusters)
            self.clusters = [(int(a), int(b)) for a, b in self.clusters]
        else:
            self.T = None
            _validate_continuous_clusters(self.clusters, density)
        self.n_clusters = len(self.clusters)
        self.pacing = pacing
        self.order = order
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise UserError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self.cumulative = bool(cumulative)
        self.cluster_order = self._cluster_order()
        if order == "none":
            self.n_stages = 1
        else:
            self.n_stages = self.n_clusters if self.cumulative else self.n_clusters + 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if isinstance(rank, bool) or not isinstance(rank, int | np.integer) or rank < 0:
            raise UserError(f"rank must be an integer >= 0, got {rank!r}")
        self.rank = int(rank)
        self.generator = torch.Generator().manual_seed(rank_seed(self.seed, self.rank))
        self.stage = 1
        self.step = 0
        self.transitions: list[tuple[int, int]] = []  # (step after which it advanced, new stage)
        n_bins = self.T if self.T is not None else self.n_clusters
        self.draw_counts = torch.zeros(n_bins, dtype=torch.long)
        self.loss_sum = torch.zeros(self.n_clusters, dtype=torch.float64)
        self.loss_count = torch.zeros(self.n_clusters, dtype=torch.long)
        if self.T is not None:
            self._cluster_of_t = torch.repeat_interleave(
                torch.arange(self.n_clusters), torch.tensor([b - a for a, b in self.clusters])
            )
        else:
            self._edges = torch.tensor([a for a, _ in self.clusters[1:]], dtype=torch.float64)
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
        """Rebuild the lookup tables that :meth:`sample` reads, once per stage change."""
        unlocked = self.unlocked
        if self.T is not None:
            self._allowed = torch.cat([torch.arange(*self.clusters[i]) for i in unlocked])
        else:
            cdf_lo = self.density.cdf(torch.tensor([self.clusters[i][0] for i in unlocked]))
            cdf_hi = self.density.cdf(torch.tensor([self.clusters[i][1] for i in unlocked]))
            mass = cdf_hi - cdf_lo
            self._cdf_lo = cdf_lo
            # Clamp bounds: the icdf round trip may stray ~1e-12 past a cluster's edge.
            self._x_lo = torch.tensor([self.clusters[i][0] for i in unlocked], dtype=torch.float64)
            self._x_hi = torch.tensor([self.clusters[i][1] for i in unlocked], dtype=torch.float64)
            self._mass_before = torch.cumsum(mass, 0) - mass
            self._total_mass = float(mass.sum())
            self._unlocked_idx = torch.tensor(unlocked)

    # ----- the two calls of a training step ----------------------------------------------
    def sample(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``batch_size`` timesteps (LongTensor) or noise levels (``dtype``).

        Draws use the sampler's own per-rank generator (saved in :meth:`state_dict`) unless
        a CPU ``generator`` is given. The result is moved to ``device``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise UserError(f"batch_size must be an integer >= 0, got {batch_size!r}")
        g = self.generator if generator is None else generator
        if self.T is not None:
            idx = torch.randint(self._allowed.numel(), (batch_size,), generator=g)
            out = self._allowed[idx]
            self.draw_counts += torch.bincount(out, minlength=self.T)
        else:
            u = torch.rand(batch_size, generator=g, dtype=torch.float64) * self._total_mass
            j = (torch.searchsorted(self._mass_before, u, right=True) - 1).clamp(min=0)
            x = self.density.icdf(self._cdf_lo[j] + (u - self._mass_before[j]))
            x = torch.minimum(torch.maximum(x, self._x_lo[j]), self._x_hi[j])
            self.draw_counts += torch.bincount(self._unlocked_idx[j], minlength=self.n_clusters)
            out = x.to(dtype)
        return out if device is None else out.to(device)

    def observe(self, loss: float | Tensor, timesteps: Tensor | None = None) -> bool:
        """Feed this step's training loss (scalar or per-sample) to the pacing rule.

        With per-sample losses and their ``timesteps`` the mean loss per cluster is recorded
        for :meth:`stats`. Under ``torch.distributed`` the mean is taken over all ranks.
        Returns True when the stage advanced at this step.
        """
        if isinstance(loss, Tensor):
            flat = loss.detach().flatten()
            total, count = flat.sum(), flat.numel()
            if timesteps is not None and count > 1:
                self._record_cluster_losses(flat, timesteps)
        else:
            total, count = torch.tensor(float(loss)), 1
        if _distributed():
            device = (
                torch.device("cuda", torch.cuda.current_device())
                if dist.get_backend() == "nccl"
                else torch.device("cpu")
            )
            buf = torch.stack(
                [
                    torch.as_tensor(total, dtype=torch.float64).to(device),
                    torch.tensor(float(count), dtype=torch.float64, device=device),
                ]
            )
            dist.all_reduce(buf)
            mean = float(buf[0] / buf[1])
        else:
            mean = float(total) / count
        self.step += 1
        if self.finished:
            return False
        if self.pacing.update(mean, self.stage, self.n_stages):
            self.stage += 1
            self.pacing.reset()
            self.transitions.append((self.step, self.stage))
            self._refresh()
            return True
        return False

    def _record_cluster_losses(self, flat: Tensor, timesteps: Tensor) -> None:
        t = timesteps.detach().flatten().cpu()
        if t.numel() != flat.numel():
            raise UserError(f"observe got {flat.numel()} per-sample losses but {t.numel()} timesteps")
        if self.T is not None:
            cluster = self._cluster_of_t[t.long()]
        else:
            cluster = torch.searchsorted(self._edges, t.to(torch.float64), right=True)
        self.loss_sum.index_add_(0, cluster, flat.cpu().to(torch.float64))
        self.loss_count.index_add_(0, cluster, torch.ones_like(cluster))

    # ----- logging ------------------------------------------------------------------------
    def stats(self, reset: bool = False) -> dict[str, Any]:
        """Current stage, unlocked range, draw histogram and mean loss per cluster.

        The histogram is per timestep (discrete) or per cluster (continuous); counts and losses
        accumulate since the last ``reset=True`` call and are this rank's own.
        """
        counts = self.loss_count.clamp(min=1).to(torch.float64)
        mean = torch.where(self.loss_count > 0, self.loss_sum / counts, float("nan"))
        out = {
            "step": self.step,
            "stage": self.stage,
            "n_stages": self.n_stages,
            "finished": self.finished,
            "unlocked": self.unlocked,
            "unlocked_intervals": self.unlocked_intervals,
            "draw_counts": self.draw_counts.tolist(),
            "cluster_loss": mean.tolist(),
        }
        if reset:
            self.draw_counts.zero_()
            self.loss_sum.zero_()
            self.loss_count.zero_()
        return out

    # ----- exact resume -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: stage, step, pacing, generator, statistics."""
        return {
            "format": _STATE_FORMAT,
            "clusters": [list(c) for c in self.clusters],
            "order": self.order,
            "cumulative": self.cumulative,
            "cluster_order": list(self.cluster_order),
            "seed": self.seed,
            "rank": self.rank,
            "stage": self.stage,
            "step": self.step,
            "transitions": [list(t) for t in self.transitions],
            "generator": self.generator.get_state(),
            "pacing": None if self.pacing is None else self.pacing.state_dict(),
            "draw_counts": self.draw_counts.clone(),
            "loss_sum": self.loss_sum.clone(),
            "loss_count": self.loss_count.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; refuses a state made for other clusters or order."""
        if state.get("format") != _STATE_FORMAT:
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
        self.step = int(state["step"])
        self.transitions = [tuple(t) for t in state["transitions"]]
        if int(state["rank"]) == self.rank:
            self.generator.set_state(state["generator"])
        # else: a resume on another number of ranks keeps this rank's fresh (seed, rank) stream.
        if self.pacing is not None and state["pacing"] is not None:
            self.pacing.load_state_dict(state["pacing"])
        self.draw_counts = state["draw_counts"].clone()
        self.loss_sum = state["loss_sum"].clone()
        self.loss_count = state["loss_count"].clone()
        self._refresh()

    def __repr__(self) -> str:
        kind = f"T={self.T}" if self.T is not None else f"density={self.density!r}"
        return (
            f"CurriculumSampler({self.n_clusters} clusters, {kind}, order={self.order!r}, "
            f"stage={self.stage}/{self.n_stages}, pacing={self.pacing!r})"
        )


def _validate_continuous_clusters(clusters: Sequence[tuple[float, float]], density: ContinuousNoise) -> None:
    if len(clusters) == 0:
        raise UserError("clusters must not be empty")
    prev = density.lo
    for i, (a, b) in enumerate(clusters):
        if not (abs(a - prev) <= 1e-12 * max(1.0, abs(prev)) and b > a):
            raise UserError(
                f"continuous clusters must tile [{density.lo}, {density.hi}] in ascending order; "
                f"cluster {i} is {(a, b)} after one ending at {prev}"
            )
        prev = b
    if abs(prev - density.hi) > 1e-12 * max(1.0, abs(density.hi)):
        raise UserError(f"clusters end at {prev}, but the density ends at {density.hi}")
