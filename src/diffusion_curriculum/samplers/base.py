"""The timestep-sampler protocol, and the base and draw stream that every sampler shares.

A *timestep sampler* chooses the noise levels of every training batch and may learn from the
losses it sees. :class:`TimestepSampler` is the protocol every sampler of :data:`SAMPLERS
<diffusion_curriculum.samplers.SAMPLERS>` implements, the paper's
:class:`~diffusion_curriculum.CurriculumSampler` included (Kim et al., arXiv 2403.10348):

- ``sample(batch_size, generator=None, device=None, dtype=float32)``: integer timesteps (discrete
  schedules) or noise levels (EDM sigma, flow time), drawn from the sampler's own stream (a
  generator seeded from ``(seed, rank, draw index)``) unless a CPU ``generator`` is given;
- ``loss_weights(levels)``: the per-sample factor the training loss must be multiplied by (ones for
  most samplers; importance weights for the ones that keep the uniform objective, a sampler's own
  loss weighting for SpeeD); computed from the state in which ``levels`` were drawn, i.e. before
  the ``observe`` of their step;
- ``observe(per_sample_loss, timesteps, sync=True)``: the losses of the step (before
  ``loss_weights``); every rank calls it once per step, and the sampler reduces what it needs over
  ranks inside it, so that every rank holds the same state afterwards, statistics included. Under
  gradient accumulation each micro-batch is given with ``sync=False`` and the step's last with
  ``sync=True``: the sampler learns once per optimizer step, from all of the step's losses;
- ``stats(reset=False)``, ``state_dict()`` / ``load_state_dict()`` (exact resume; the state is the
  same on every rank, so the one file Accelerate's ``save_state`` writes from the main process
  resumes every rank, see :mod:`~diffusion_curriculum.distributed`), and the stage
  view the trainer logs (``stage``, ``n_stages``, ``unlocked_intervals``, ``transitions``; a
  sampler without stages is in its only stage with everything unlocked).

:class:`NoiseSpaceSampler` is the base of every sampler: the clusters of the noise space, validated;
the rank's counter-based stream of draws (:func:`draw_seed`); the step counter; and the mean loss
per cluster over all ranks. :func:`stratified_counts` splits a batch over allocation bins, exactly
in expectation. The curriculum (:mod:`.curriculum`) and :class:`~.cluster.ClusterSampler`, the base
of the other samplers, build on them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ..clustering import validate_discrete_clusters
from ..errors import UserError
from ..schedules import ContinuousNoise

__all__ = [
    "NoiseSpaceSampler",
    "TimestepSampler",
    "check_bool",
    "check_int",
    "check_real",
    "draw_seed",
    "pending_error",
    "rank_seed",
    "stratified_counts",
    "stream_seed",
]


@runtime_checkable
class TimestepSampler(Protocol):
    """What the trainer, the CLI, ``compare`` and the diffusers recipe need from a timestep sampler."""

    clusters: list[tuple[Any, Any]]
    n_clusters: int
    T: int | None
    stage: int
    n_stages: int
    transitions: list[tuple[int, int, str | None]]

    @property
    def unlocked_intervals(self) -> list[tuple[Any, Any]]: ...

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor: ...

    def loss_weights(self, levels: Tensor) -> Tensor: ...

    def observe(self, loss: float | Tensor, timesteps: Tensor | None = None, *, sync: bool = True) -> bool: ...

    def stats(self, reset: bool = False) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` as an int, refused (naming ``name``) unless it is an integer >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_real(name: str, value: Any, low: float, high: float, *, open_low: bool = False) -> float:
    """``value`` as a float, refused (naming ``name``) unless a finite number in [low, high]
    (``(low, high]`` with ``open_low``)."""
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > high or value < low or (open_low and value == low):
        bracket = "(" if open_low else "["
        raise UserError(f"{name} must be a finite number in {bracket}{low:g}, {high:g}], got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{name} must be true or false, got {value!r}")
    return value


def stratified_counts(quotas: Tensor, offset: float) -> Tensor:
    """Integer counts n_c that sum to sum(quotas) (an integer), each floor(q_c) or ceil(q_c), with
    E[n_c] = q_c exactly when ``offset`` is uniform on [0, 1).

    Each cluster first gets floor(q_c); the R left over go to R distinct clusters drawn by
    systematic sampling (Madow 1949): the points offset, offset + 1, ..., offset + R - 1 fall in the
    intervals that tile [0, R) with lengths q_c - floor(q_c), so cluster c gets one more with
    probability exactly q_c - floor(q_c).
    """
    quotas = quotas.to(torch.float64)
    base = torch.floor(quotas)
    frac = quotas - base
    remainder = round(float(frac.sum()))
    counts = base.long()
    if remainder == 0:
        return counts
    edges = torch.cumsum(frac, 0)
    edges[-1] = remainder  # exactly: every point below lands in some interval
    points = offset + torch.arange(remainder, dtype=torch.float64)
    chosen = torch.searchsorted(edges, points, right=True).clamp(max=quotas.numel() - 1)
    return counts + torch.bincount(chosen, minlength=quotas.numel())


def rank_seed(seed: int, rank: int) -> int:
    """A well-mixed 64-bit seed for (seed, rank), so every rank draws its own timesteps."""
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, dtype=np.uint64)[0])


def stream_seed(seed: int, stream: int) -> int:
    """The seed of a sampler's timestep stream ``stream`` for a run of ``seed``: the seed itself for stream 0,
    else a well-mixed 64-bit seed of (seed, stream), so that no stream of one run is another run's stream 0
    (a plain ``seed + stream`` would give seed 1's stream 1 to seed 2)."""
    if stream == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), 0x5EED, int(stream)]).generate_state(1, dtype=np.uint64)[0])


def draw_seed(seed: int, rank: int, index: int) -> int:
    """The seed of a sampler's ``index``-th draw on ``rank``: a counter-based stream, so that a
    sampler's randomness is the counter alone, the same number on every rank, and one saved state
    resumes every rank's stream (see :mod:`~diffusion_curriculum.distributed`)."""
    entropy = [int(seed), int(rank), int(index)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def pending_error() -> UserError:
    """The refusal of a sampler state asked for between the micro-batches of an accumulated step."""
    return UserError(
        "sampler state asked for between micro-batches (observe(..., sync=False) without the "
        "sync=True that ends the step); save after the optimizer step"
    )


class NoiseSpaceSampler:
    """What every timestep sampler over the run's clusters shares, :class:`CurriculumSampler` and
    :class:`~diffusion_curriculum.samplers.ClusterSampler` alike: the clusters of the noise space,
    validated; the rank's stream of draws (:func:`draw_seed`); the step counter; and the mean loss per
    cluster, summed over all ranks by the subclass's ``observe``.

    ``clusters`` are sorted by noise ascending (cluster 0 = the least noisy): ``(start, stop)`` integer
    intervals tiling 0..T-1, or, with ``density``, float intervals tiling ``[density.lo, density.hi]``.
    """

    def __init__(
        self,
        clusters: Sequence[tuple[float, float]],
        *,
        density: ContinuousNoise | None = None,
        seed: int = 0,
        rank: int | None = None,
    ) -> None:
        self.clusters: list[tuple[Any, Any]] = [tuple(c) for c in clusters]
        self.density = density
        if density is None:
            self.T: int | None = validate_discrete_clusters(self.clusters)
            self.clusters = [(int(a), int(b)) for a, b in self.clusters]
            sizes = torch.tensor([b - a for a, b in self.clusters])
            self._cluster_of_t = torch.repeat_interleave(torch.arange(len(self.clusters)), sizes)
        else:
            self.T = None
            _validate_continuous_clusters(self.clusters, density)
            self._inner_edges = torch.tensor([a for a, _ in self.clusters[1:]], dtype=torch.float64)
        self.n_clusters = len(self.clusters)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise UserError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if isinstance(rank, bool) or not isinstance(rank, int | np.integer) or rank < 0:
            raise UserError(f"rank must be an integer >= 0, got {rank!r}")
        self.rank = int(rank)
        self.draws = 0  # calls of sample() that used the sampler's own stream
        self.step = 0
        self.loss_sum = torch.zeros(self.n_clusters, dtype=torch.float64)  # all ranks', since the last reset
        self.loss_count = torch.zeros(self.n_clusters, dtype=torch.long)

    def cluster_of(self, levels: Tensor) -> Tensor:
        """The cluster index of each level (timestep or noise level), flattened, on the CPU."""
        x = levels.detach().flatten().cpu()
        if self.T is not None:
            return self._cluster_of_t[x.long()]
        return torch.searchsorted(self._inner_edges, x.to(torch.float64), right=True)

    def _generator(self, generator: torch.Generator | None) -> torch.Generator:
        """``generator`` when given, else the next one of the sampler's own stream (seeded from its
        seed, rank and draw counter, which the state saves)."""
        if generator is not None:
            return generator
        g = torch.Generator().manual_seed(draw_seed(self.seed, self.rank, self.draws))
        self.draws += 1
        return g

    def _add_losses(self, sums: Tensor, counts: Tensor) -> None:
        """Add one step's per-cluster loss sums and counts (all ranks') to the statistics."""
        self.loss_sum += sums
        self.loss_count += counts.round().long()

    def _cluster_loss(self, reset: bool) -> list[float]:
        """The mean loss per cluster since the last reset (NaN where none); then reset if asked."""
        counts = self.loss_count.clamp(min=1).to(torch.float64)
        mean = torch.where(self.loss_count > 0, self.loss_sum / counts, float("nan")).tolist()
        if reset:
            self.loss_sum.zero_()
            self.loss_count.zero_()
        return mean

    def _stream_state(self) -> dict[str, Any]:
        """The state of the stream, the step counter and the loss statistics."""
        return {
            "seed": self.seed,
            "step": self.step,
            "draws": self.draws,
            "loss_sum": self.loss_sum.clone(),
            "loss_count": self.loss_count.clone(),
        }

    def _load_stream_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`_stream_state`. States from before the draw counter continue with the
        stream of draw index ``step``."""
        self.step = int(state["step"])
        self.seed = int(state["seed"])  # the stream continues from the saved seed and counter
        self.draws = int(state.get("draws", self.step))
        self.loss_sum = state["loss_sum"].clone()
        self.loss_count = state["loss_count"].clone()


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
