"""Metrics for vector data against the true distribution: exact NLL, sliced Wasserstein, MMD, excess denoising error.

With a :class:`~diffusion_curriculum.data.GaussianMixture` as the data density, generated samples
can be scored by their exact likelihood, and a denoiser by its distance to the exact optimal
denoiser at every noise level; the sample-based distances (sliced Wasserstein-2, kernel MMD) need
only a reference sample. All computation is float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..data.gmm import GaussianMixture
from ..errors import UserError
from ..schedules import DiscreteSchedule
from ..weighting import Weighting, target_factor
from .distribution import _features as _vectors
from .distribution import _partial_sq_dist_chunks, _same_dim

if TYPE_CHECKING:  # the objectives import diffusers, which these metrics do not otherwise need
    from ..objectives import Objective

__all__ = [
    "VectorScorer",
    "excess_denoising_error",
    "mmd",
    "nll",
    "optimal_cluster_losses",
    "sliced_wasserstein",
    "vector_metrics",
]

_F64 = torch.float64
_CHUNK_ELEMENTS = 1 << 22  # float64 entries of one intermediate block: 32 MiB
# The sample metrics' defaults, shared by the functions and VectorScorer.
N_PROJECTIONS = 256
BANDWIDTHS = (0.1, 0.5, 1, 2, 5)
MAX_N = 4000


def nll(samples: Tensor, gmm: GaussianMixture) -> float:
    """Mean negative log-likelihood of samples (n, D) under the mixture's exact density (nats, float64).

    For samples of the mixture itself this estimates its entropy, the lowest value any sampler can
    reach in expectation. Evaluated in chunks, so memory stays bounded for many components.
    """
    x = _vectors(samples, "samples")
    if x.shape[1] != gmm.dim:
        raise UserError(f"samples have dimension {x.shape[1]}, the mixture {gmm.dim}")
    rows = max(1, _CHUNK_ELEMENTS // (gmm.n_components * gmm.dim))
    total = sum(float(gmm.log_prob(chunk).sum()) for chunk in x.split(rows))
    return -total / x.shape[0]


def _w2_sq_sorted(xs: Tensor, ys: Tensor) -> Tensor:
    """Squared W2 per column between the empirical 1-D distributions of sorted columns xs (n, P) and ys (m, P).

    Exact for unequal n and m: both quantile functions are step functions, constant between the
    merged breakpoints i/n and j/m (integers on the common grid 1/(n m), so no rounding), and the
    integral of their squared difference is a weighted sum over those pieces.
    """
    n, m = xs.shape[0], ys.shape[0]
    ends = torch.cat([torch.arange(1, n + 1) * m, torch.arange(1, m + 1) * n]).unique()  # sorted
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    widths = (ends - starts).to(_F64) / (n * m)
    return widths @ (xs[starts // m] - ys[starts // n]).pow(2)


def _direction_blocks(n_projections: int, dim: int, rows: int, generator: torch.Generator | None) -> list[Tensor]:
    """Uniform unit directions on the sphere (normalised Gaussians from the CPU ``generator``), in blocks of as
    many as keep one block's projections of ``rows`` points within :data:`_CHUNK_ELEMENTS`."""
    if n_projections < 1:
        raise UserError(f"n_projections must be >= 1, got {n_projections}")
    directions = torch.randn(int(n_projections), dim, generator=generator, dtype=_F64)
    directions /= directions.norm(dim=1, keepdim=True)
    return list(directions.split(max(1, _CHUNK_ELEMENTS // rows)))


def _sorted_projections(x: Tensor, blocks: list[Tensor]) -> list[Tensor]:
    return [(x @ block.T).sort(0).values for block in blocks]


def _sliced_w2(xs: list[Tensor], ys: list[Tensor]) -> float:
    """sqrt of the mean W2^2 over all projections, from sorted projections block by block."""
    return float(torch.cat([_w2_sq_sorted(a, b) for a, b in zip(xs, ys, strict=True)]).mean().sqrt())


def sliced_wasserstein(
    x: Tensor, y: Tensor, n_projections: int = N_PROJECTIONS, generator: torch.Generator | None = None
) -> float:
    """Sliced Wasserstein-2 distance: sqrt of the mean over random unit directions of W2^2 between projections.

    Directions are uniform on the sphere (normalised Gaussians from the CPU ``generator``). Each
    1-D W2^2 is exact between the two empirical distributions, also for unequal sample sizes
    (merged quantile functions, see ``_w2_sq_sorted``).
    """
    x, y = _vectors(x, "x"), _vectors(y, "y")
    _same_dim(x, y)
    blocks = _direction_blocks(n_projections, x.shape[1], x.shape[0] + y.shape[0], generator)
    return _sliced_w2(_sorted_projections(x, blocks), _sorted_projections(y, blocks))


def _rbf_sum(a: Tensor, b: Tensor, inv_two_h_sq: Tensor) -> float:
    """Sum over all pairs (a_i, b_j) of the kernel sum_h exp(-||a_i - b_j||^2 / (2 h^2))."""
    a_sq = a.pow(2).sum(1)
    total = 0.0
    for start, stop, part in _partial_sq_dist_chunks(a, b):
        d2 = part.add_(a_sq[start:stop, None]).clamp_(min=0)
        kernel = torch.empty_like(d2)  # reused per bandwidth: in-place ops, no fresh allocations
        for g in inv_two_h_sq.tolist():
            total += float(torch.mul(d2, -g, out=kernel).exp_().sum())
    return total


def _kernel_factors(bandwidths: Sequence[float], max_n: int) -> Tensor:
    """1 / (2 h^2) per bandwidth h, after checking the bandwidths and ``max_n``."""
    h = torch.as_tensor(list(bandwidths), dtype=_F64).flatten()
    if h.numel() < 1 or not (h > 0).all() or not torch.isfinite(h).all():
        raise UserError(f"bandwidths must be positive and finite, got {list(bandwidths)}")
    if max_n < 2:
        raise UserError(f"max_n must be >= 2, got {max_n}")
    return 1.0 / (2.0 * h**2)


def _subsample(n: int, max_n: int, generator: torch.Generator | None) -> Tensor | None:
    """The rows kept of a set of n larger than ``max_n`` (without replacement), None to keep all."""
    return torch.randperm(n, generator=generator)[:max_n] if n > max_n else None


def _rows(x: Tensor, keep: Tensor | None) -> Tensor:
    return x if keep is None else x[keep]


def _unbiased_mmd(xx: float, yy: float, xy: float, n: int, m: int, k: int) -> float:
    """Unbiased MMD^2 from the kernel sums over all pairs (the kernel is k on the diagonal)."""
    return (xx - k * n) / (n * (n - 1)) + (yy - k * m) / (m * (m - 1)) - 2.0 * xy / (n * m)


def mmd(
    x: Tensor,
    y: Tensor,
    bandwidths: Sequence[float] = BANDWIDTHS,
    generator: torch.Generator | None = None,
    max_n: int = MAX_N,
) -> float:
    """Unbiased MMD^2 between samples x and y with the kernel sum_h exp(-||a - b||^2 / (2 h^2)) over ``bandwidths``.

    Each set larger than ``max_n`` is first subsampled to ``max_n`` rows without replacement (CPU
    ``generator``); the cost is quadratic in the sizes. Bandwidths are in data units (for
    standardized data, 0.1 to 5 spans fine to coarse structure). Unbiased, so it can be slightly
    negative when both samples come from one distribution.
    """
    x, y = _vectors(x, "x", 2), _vectors(y, "y", 2)
    _same_dim(x, y)
    g = _kernel_factors(bandwidths, max_n)
    x, y = _rows(x, _subsample(x.shape[0], max_n, generator)), _rows(y, _subsample(y.shape[0], max_n, generator))
    n, m = x.shape[0], y.shape[0]
    return _unbiased_mmd(_rbf_sum(x, x, g), _rbf_sum(y, y, g), _rbf_sum(x, y, g), n, m, g.numel())


class VectorScorer:
    """:func:`vector_metrics` for many sample sets of one size against one reference, bit for bit.

    Every checkpoint of a run is scored against the same reference with the same seed, so the
    directions, the subsampling, the reference's sorted projections and its MMD self-term are the
    same each time; on the 18,000-row ``gmm`` reference those two terms were about 80% of a
    checkpoint's evaluation. They are computed here once, from the draws ``vector_metrics`` makes
    in its order (directions, then the samples' subsample, then the reference's), so
    ``VectorScorer(reference, gmm, n, generator).score(samples)`` equals
    ``vector_metrics(samples, reference, gmm, generator)`` exactly, for every ``samples`` of n rows (``max_n``:
    :func:`mmd`'s subsample size).
    """

    def __init__(
        self,
        reference: Tensor,
        gmm: GaussianMixture | None,
        n: int,
        generator: torch.Generator | None = None,
        *,
        max_n: int = MAX_N,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise UserError(f"n: expected a sample count >= 2, got {n!r}")
        y = _vectors(reference, "y", 2)
        self.n, self.gmm = n, gmm
        self._blocks = _direction_blocks(N_PROJECTIONS, y.shape[1], n + y.shape[0], generator)
        self._reference_sorted = _sorted_projections(y, self._blocks)
        self._factors = _kernel_factors(BANDWIDTHS, max_n)
        self._keep = _subsample(n, max_n, generator)
        self._reference = _rows(y, _subsample(y.shape[0], max_n, generator))
        self._reference_self = _rbf_sum(self._reference, self._reference, self._factors)

    def score(self, samples: Tensor) -> dict[str, float]:
        """``nll`` (with the true mixture), ``sliced_wasserstein`` and ``mmd`` of ``samples`` (n rows)."""
        x = _vectors(samples, "x", 2)
        if x.shape[0] != self.n:
            raise UserError(f"samples: this scorer was set up for {self.n} rows, got {x.shape[0]}")
        _same_dim(x, self._reference)
        out = {} if self.gmm is None else {"nll": nll(x, self.gmm)}
        out["sliced_wasserstein"] = _sliced_w2(_sorted_projections(x, self._blocks), self._reference_sorted)
        x, y = _rows(x, self._keep), self._reference
        xx, xy = _rbf_sum(x, x, self._factors), _rbf_sum(x, y, self._factors)
        out["mmd"] = _unbiased_mmd(xx, self._reference_self, xy, x.shape[0], y.shape[0], self._factors.numel())
        return out


def _model_placement(model: Any) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's first floating-point parameter; CPU float32 for parameter-free callables."""
    parameters = getattr(model, "parameters", None)
    for p in parameters() if callable(parameters) else ():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _cluster_levels(objective: Objective, cluster: tuple, n: int, generator: torch.Generator | None) -> Tensor:
    """n levels uniform within one cluster: integers start..stop-1 (discrete) or floats in (lo, hi] (continuous)."""
    space = objective.noise_space()
    lo, hi = cluster
    if isinstance(space, DiscreteSchedule):
        if int(lo) != lo or int(hi) != hi or not 0 <= lo < hi <= space.T:
            raise UserError(f"discrete cluster must be integers 0 <= start < stop <= {space.T}, got {cluster}")
        return torch.randint(int(lo), int(hi), (n,), generator=generator)
    if not space.lo <= lo < hi <= space.hi:
        raise UserError(f"continuous cluster must satisfy {space.lo} <= lo < hi <= {space.hi}, got {cluster}")
    # (lo, hi] rather than [lo, hi): a cluster starting at flow time 0 would otherwise allow sigma = 0.
    return hi - (hi - lo) * torch.rand(n, generator=generator, dtype=_F64)


@torch.no_grad()
def excess_denoising_error(
    model: Any,
    objective: Objective,
    gmm: GaussianMixture,
    clusters: Sequence[tuple],
    *,
    n_per_cluster: int = 512,
    generator: torch.Generator | None = None,
    cond: Any = None,
) -> list[float]:
    """Per cluster, the mean squared distance per dimension between the model's epsilon estimate and the optimal one.

    ``clusters`` are the sampler's: ``(start, stop)`` timesteps for DDPM objectives (levels drawn
    uniformly over the integers start..stop-1) or ``(lo, hi)`` sigmas / flow times (levels uniform
    in the noise variable on (lo, hi], not under the training density). For each level, x0 is an
    exact mixture sample, x = alpha x0 + sigma eps with the objective's ``alpha_sigma``, and the
    model's estimate eps_hat = (x - alpha x0_hat) / sigma with x0_hat from ``objective.predict_x0``
    is compared with the exact E[eps | x] of the mixture: the loss above the Bayes floor, in
    epsilon units whatever the objective's target. The model sees x on its device and in its dtype
    (CPU float32 for parameter-free callables); ``cond`` is passed as is, so it must fit a batch of
    ``n_per_cluster``. ``generator`` (CPU) drives the levels, x0 and eps. Runs under ``no_grad``.
    """
    if len(clusters) == 0:
        raise UserError("clusters must not be empty")
    if n_per_cluster < 1:
        raise UserError(f"n_per_cluster must be >= 1, got {n_per_cluster}")
    device, dtype = _model_placement(model)
    errors = []
    for cluster in clusters:
        levels = _cluster_levels(objective, tuple(cluster), int(n_per_cluster), generator)
        alpha, sigma = objective.alpha_sigma(levels)
        x0 = gmm.sample(int(n_per_cluster), generator)
        eps = torch.randn(x0.shape, generator=generator, dtype=_F64)
        x = (alpha[:, None] * x0 + sigma[:, None] * eps).to(device, dtype)
        x0_hat = objective.predict_x0(model, x, levels.to(device), cond).to("cpu", _F64)
        x_seen = x.to("cpu", _F64)  # the rounded input the model saw: the optimum is taken there too
        eps_hat = (x_seen - alpha[:, None] * x0_hat) / sigma[:, None]
        eps_star = gmm.optimal_eps(x_seen, alpha, sigma)
        errors.append(float((eps_hat - eps_star).pow(2).mean()))
    return errors


@torch.no_grad()
def optimal_cluster_losses(
    objective: Objective,
    weighting: Weighting,
    gmm: GaussianMixture,
    clusters: Sequence[tuple],
    *,
    n_per_cluster: int = 4096,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Per cluster, the expected training loss of the exact optimal denoiser: the floor no model can go below.

    In the units of the trainer's per-sample loss (the objective's target MSE times the weighting):
    the optimal x0 estimate errs by -(sigma / alpha)(eps* - eps), eps* = E[eps | x], so its target
    error is ``target_factor`` / SNR times the mean of (eps* - eps)^2 (:mod:`~..weighting`). Levels
    are drawn within each cluster from the training density (uniform timesteps, or the continuous
    density restricted to the cluster), as the timestep samplers draw them; x0 are exact mixture
    samples. The :class:`~diffusion_curriculum.samplers.LearningProgressSampler`'s ``optimal_loss``.
    """
    if n_per_cluster < 1:
        raise UserError(f"n_per_cluster must be >= 1, got {n_per_cluster}")
    space = objective.noise_space()
    out = []
    for lo, hi in clusters:
        if isinstance(space, DiscreteSchedule):
            levels = torch.randint(int(lo), int(hi), (n_per_cluster,), generator=generator)
        else:
            a, b = space.cdf(torch.tensor([float(lo), float(hi)], dtype=_F64)).tolist()
            u = a + (b - a) * torch.rand(n_per_cluster, generator=generator, dtype=_F64)
            levels = space.icdf(u).clamp(float(lo), float(hi))
        alpha, sigma = (v.to(_F64) for v in objective.alpha_sigma(levels))
        x0 = gmm.sample(n_per_cluster, generator)
        eps = torch.randn(x0.shape, generator=generator, dtype=_F64)
        x = alpha[:, None] * x0 + sigma[:, None] * eps
        eps_error = (gmm.optimal_eps(x, alpha, sigma) - eps).pow(2).mean(1)
        snr = objective.snr(levels).to(_F64)
        factor = target_factor(snr, objective.target, objective.sigma_data) / snr.clamp(min=1e-30)
        weights = weighting(snr, objective.target, sigma_data=objective.sigma_data, dtype=_F64)
        out.append(float((weights * factor * eps_error).mean()))
    return out


def vector_metrics(
    samples: Tensor,
    reference: Tensor,
    gmm: GaussianMixture | None,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Sample quality of vector data: ``nll`` (only with the true ``gmm``), ``sliced_wasserstein`` and ``mmd``.

    The last two compare ``samples`` with a ``reference`` sample of the data at the functions'
    defaults; ``generator`` drives the projections, then the MMD subsampling. To score many sample
    sets of one size against one reference, build a :class:`VectorScorer` once.
    """
    return VectorScorer(reference, gmm, _vectors(samples, "x", 2).shape[0], generator).score(samples)
