"""Distribution metrics on feature vectors: FID, KID, precision/recall and density/coverage.

All of them compare a set of real features (N, d) with a set of generated ones (M, d); they are
the usual image metrics once the features come from an Inception-like network, and apply as they
are to any vector data. Computation is float64 on the CPU, whatever device the features come
from. Nearest-neighbour metrics work on row chunks of the pairwise distance matrix (64 MiB each),
and KID on batches of subsets of the same size, so memory stays bounded for any N and M.

References: Heusel et al. 2017 (FID; pytorch-fid's formula), Binkowski et al. 2018 (KID, as in
torch-fidelity), Kynkäänniemi et al. 2019 (precision/recall), Naeem et al. 2020 (density/coverage).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError

__all__ = [
    "FeatureStats",
    "density_coverage",
    "feature_metrics",
    "frechet_distance",
    "kid",
    "noise_floor",
    "precision_recall",
]

_F64 = torch.float64
_CHUNK_ELEMENTS = 1 << 23  # float64 entries of one distance chunk: 64 MiB


def _features(x: Tensor, name: str, min_rows: int = 2) -> Tensor:
    """Check that ``x`` is a finite (n, d) matrix with at least ``min_rows`` rows; return it as CPU float64."""
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[1] < 1:
        raise UserError(f"{name} must be a 2-D (n, d) tensor of features, got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise UserError(f"{name} needs at least {min_rows} rows, got {x.shape[0]}")
    x = x.detach().to("cpu", _F64)
    if not torch.isfinite(x).all():
        raise UserError(f"{name} contains NaN or infinite values")
    return x


def _same_dim(a: Tensor, b: Tensor) -> None:
    """Raise unless both feature sets have the same dimension."""
    if a.shape[1] != b.shape[1]:
        raise UserError(f"feature dimensions differ: {a.shape[1]} and {b.shape[1]}")


@dataclass(frozen=True)
class FeatureStats:
    """Mean (d,) and unbiased covariance (d, d) of n feature vectors, float64 on the CPU: FID's summary."""

    mean: Tensor
    cov: Tensor
    n: int

    def __post_init__(self) -> None:
        mean = torch.as_tensor(self.mean).detach().to("cpu", _F64)
        cov = torch.as_tensor(self.cov).detach().to("cpu", _F64)
        if mean.ndim != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
            raise UserError(f"expected mean (d,) and cov (d, d), got {tuple(mean.shape)} and {tuple(cov.shape)}")
        n = int(self.n)
        if n < 2:
            raise UserError(f"FeatureStats needs n >= 2 samples, got {n}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)
        object.__setattr__(self, "n", n)

    @property
    def dim(self) -> int:
        """Feature dimension d."""
        return self.mean.shape[0]

    @classmethod
    def from_features(cls, feats: Tensor) -> FeatureStats:
        """Summarise features (n, d), n >= 2: sample mean and unbiased (n - 1) covariance in float64."""
        x = _features(feats, "feats")
        mean = x.mean(0)
        centred = x - mean
        return cls(mean, centred.T @ centred / (x.shape[0] - 1), x.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of tensors and an int, for ``torch.save`` (or ``numpy.savez`` after ``.numpy()``)."""
        return {"mean": self.mean, "cov": self.cov, "n": self.n}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureStats:
        """Rebuild from :meth:`to_dict` output, also as loaded from .pt or .npz (numpy arrays, 0-d n)."""
        missing = {"mean", "cov", "n"} - set(d)
        if missing:
            raise UserError(f"FeatureStats dict lacks {sorted(missing)}")
        return cls(torch.as_tensor(d["mean"]), torch.as_tensor(d["cov"]), int(d["n"]))


def _psd_sqrt(s: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix by eigendecomposition, eigenvalues clamped at 0."""
    evals, evecs = torch.linalg.eigh((s + s.T) / 2)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}) between two Gaussians, in float64.

    tr (S1 S2)^{1/2} is the sum of square roots of the eigenvalues of S1 S2, which equal those of
    the symmetric PSD matrix S1^{1/2} S2 S1^{1/2}. Computing them there, with symmetric
    eigendecompositions and eigenvalues clamped at 0, avoids the complex parts and the
    ill-conditioning of a general ``sqrtm`` of the non-symmetric S1 S2 (pytorch-fid's route,
    which it patches with an eps offset); on well-conditioned data both agree to float64 rounding.
    The result is clamped at 0 against rounding.
    """
    if not isinstance(a, FeatureStats) or not isinstance(b, FeatureStats):
        raise UserError("frechet_distance takes two FeatureStats")
    if a.dim != b.dim:
        raise UserError(f"feature dimensions differ: {a.dim} and {b.dim}")
    root_a = _psd_sqrt(a.cov)
    middle = root_a @ b.cov @ root_a
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    fd = (a.mean - b.mean).pow(2).sum() + torch.trace(a.cov) + torch.trace(b.cov) - 2 * tr_sqrt
    return max(float(fd), 0.0)


def noise_floor(features: Tensor, seed: int = 0) -> tuple[float, int]:
    """Real-vs-real Fréchet distance between two disjoint random halves of ``features``, and the half's size.

    The FID the real data scores against itself at that sample size: a generated set whose FID is near it is as
    close to the data as the data is to itself (FID's bias falls with the number of images, so the floor at the
    half's size is an order of magnitude for another size, not a bound).
    """
    perm = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(seed))
    half = features.shape[0] // 2
    a, b = features[perm[:half]], features[perm[half : 2 * half]]
    return frechet_distance(FeatureStats.from_features(a), FeatureStats.from_features(b)), half


def _poly_kernel_sums(a: Tensor, b: Tensor) -> Tensor:
    """Per batch, the sum over all pairs of the cubic kernel (a.b/d + 1)^3; a (S, m, d), b (S, m', d) -> (S,)."""
    one = torch.ones((), dtype=a.dtype)
    return torch.baddbmm(one, a, b.transpose(1, 2), alpha=1.0 / a.shape[2]).pow_(3).sum((1, 2))


def _poly_mmd2(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD^2 per batch of equal-size sets (S, m, d) under the kernel (x.y/d + 1)^3 (torch-fidelity's)."""
    m, d = x.shape[1], x.shape[2]
    diagonal = ((x.pow(2).sum(2) / d + 1) ** 3).sum(1) + ((y.pow(2).sum(2) / d + 1) ** 3).sum(1)
    within = (_poly_kernel_sums(x, x) + _poly_kernel_sums(y, y) - diagonal) / (m * (m - 1))
    return within - 2 * _poly_kernel_sums(x, y) / (m * m)


def kid(
    x: Tensor,
    y: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of the unbiased polynomial-kernel MMD^2 over random subsets.

    Each of ``subsets`` rounds draws ``min(subset_size, n_x, n_y)`` rows of each set without
    replacement (CPU ``generator``) and computes the unbiased MMD^2 with k(a, b) = (a.b/d + 1)^3,
    as Binkowski et al. 2018 and torch-fidelity do; the std is the population std (ddof 0) over
    the subsets, as torch-fidelity reports it. Unbiased, so it can be slightly negative. Subsets
    are evaluated in batches (batched GEMMs of bounded size), few large operations rather than
    many small ones.
    """
    x, y = _features(x, "x"), _features(y, "y")
    _same_dim(x, y)
    if subsets < 1 or subset_size < 2:
        raise UserError(f"need subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    m = min(int(subset_size), x.shape[0], y.shape[0])
    draws = [
        (torch.randperm(x.shape[0], generator=generator)[:m], torch.randperm(y.shape[0], generator=generator)[:m])
        for _ in range(int(subsets))
    ]
    per_batch = max(1, _CHUNK_ELEMENTS // (m * m))
    values = torch.cat(
        [
            _poly_mmd2(x[torch.stack([i for i, _ in batch])], y[torch.stack([j for _, j in batch])])
            for batch in (draws[s : s + per_batch] for s in range(0, len(draws), per_batch))
        ]
    )
    return float(values.mean()), float(values.std(correction=0))


def _partial_sq_dist_chunks(a: Tensor, b: Tensor) -> Iterator[tuple[int, int, Tensor]]:
    """Yield (start, stop, P) over row chunks of a, with P[i, j] = ||b_j||^2 - 2 a_i.b_j for i in start..stop-1.

    P is the squared distance minus ||a_i||^2, from one fused GEMM; comparisons against a radius r
    per pair move ||a_i||^2 to the threshold side instead of adding it to every entry.
    """
    b_sq = b.pow(2).sum(1)[None]
    rows = max(1, _CHUNK_ELEMENTS // b.shape[0])
    for start in range(0, a.shape[0], rows):
        chunk = a[start : start + rows]
        yield start, start + chunk.shape[0], torch.addmm(b_sq, chunk, b.T, alpha=-2.0)


def _kth_nn_partial(x: Tensor, ks: list[int]) -> Tensor:
    """Squared distance to each point's k-th nearest neighbour in x (self excluded) minus ||x_i||^2; (len(ks), n).

    Kept in the partial form of :func:`_partial_sq_dist_chunks`, so that comparing it with
    another pass's partial distances from the same points is exact: against itself, a point's
    k-th neighbour then lies exactly on its ball's boundary, as in the papers' code.
    """
    kmax = max(ks)
    if kmax > x.shape[0] - 1:
        raise UserError(f"k={kmax} needs more than {kmax} points in each set, got {x.shape[0]}")
    out = torch.empty(len(ks), x.shape[0], dtype=_F64)
    idx = torch.tensor(ks) - 1
    for start, stop, part in _partial_sq_dist_chunks(x, x):
        part.diagonal(offset=start).fill_(float("inf"))  # the chunk's own rows: exclude each point itself
        out[:, start:stop] = part.topk(kmax, dim=1, largest=False).values[:, idx].T
    return out


def _centred_pair(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Validate both sets and shift them by the real mean (distances unchanged, less cancellation)."""
    real, fake = _features(real, "real"), _features(fake, "fake")
    _same_dim(real, fake)
    centre = real.mean(0)
    return real - centre, fake - centre


def _check_k(k: int) -> int:
    """Return k as an int after checking it is a positive integer."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise UserError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _neighbourhood_metrics(real: Tensor, fake: Tensor, k_pr: int | None, k_dc: int | None) -> dict[str, float]:
    """Precision/recall with k_pr and density/coverage with k_dc (either None to skip), one pass over real x fake."""
    ks = [k for k in (k_pr, k_dc) if k is not None]
    real_radii = _kth_nn_partial(real, ks)  # partial: minus ||real_i||^2, like the cross pass below
    real_sq = real.pow(2).sum(1)
    n_real, n_fake = real.shape[0], fake.shape[0]
    fake_in_real = torch.zeros(n_fake, dtype=torch.bool)
    real_in_fake = torch.zeros(n_real, dtype=torch.bool)
    fake_counts = torch.zeros(n_fake, dtype=torch.int64)
    real_covered = torch.zeros(n_real, dtype=torch.bool)
    if k_pr is not None:  # recall needs the fake radii in full: partial + ||fake_j||^2
        fake_radii = (_kth_nn_partial(fake, [k_pr])[0] + fake.pow(2).sum(1)).clamp_(min=0)[None]
    for start, stop, part in _partial_sq_dist_chunks(real, fake):
        rows = slice(start, stop)
        if k_dc is not None:  # Naeem et al. (prdc): strictly inside a real ball
            inside = part < real_radii[-1, rows, None]
            fake_counts += inside.sum(0, dtype=torch.int32)
            real_covered[rows] = inside.any(1)
        if k_pr is not None:  # Kynkäänniemi et al.: inside means distance <= radius
            fake_in_real |= (part <= real_radii[0, rows, None]).any(0)
            real_in_fake[rows] = (part.sub_(fake_radii) <= -real_sq[rows, None]).any(1)
    out = {}
    if k_pr is not None:
        out["precision"] = float(fake_in_real.double().mean())
        out["recall"] = float(real_in_fake.double().mean())
    if k_dc is not None:
        out["density"] = float(fake_counts.double().mean() / k_dc)
        out["coverage"] = float(real_covered.double().mean())
    return out


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): the share of each set inside the other's manifold.

    A set's manifold is the union of balls around its points with radius the distance to the
    k-th nearest neighbour (self excluded). Precision is the share of fake points inside the real
    manifold (fidelity), recall the share of real points inside the fake manifold (diversity).
    """
    real, fake = _centred_pair(real, fake)
    out = _neighbourhood_metrics(real, fake, _check_k(k), None)
    return out["precision"], out["recall"]


def density_coverage(real: Tensor, fake: Tensor, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020): outlier-robust alternatives to precision and recall.

    With real k-NN balls only: density is the mean number of real balls holding a fake point,
    divided by k (about 1 when both sets share a distribution, unbounded above); coverage is the
    share of real points whose ball holds at least one fake point.
    """
    real, fake = _centred_pair(real, fake)
    out = _neighbourhood_metrics(real, fake, None, _check_k(k))
    return out["density"], out["coverage"]


def feature_metrics(
    real: Tensor,
    fake: Tensor,
    *,
    real_stats: FeatureStats | None = None,
    k: int = 3,
    k_density: int = 5,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """All distribution metrics of fake against real features: fid, kid, kid_std, precision, recall, density, coverage.

    ``real_stats`` (e.g. cached over a larger reference set) replaces the real features' own
    statistics for FID only. ``k`` is the precision/recall neighbourhood (their paper's 3),
    ``k_density`` the density/coverage one (their paper's 5); ``generator`` drives KID's subsets.
    The nearest-neighbour metrics share one pass over the real x fake distances.
    """
    real, fake = _features(real, "real"), _features(fake, "fake")
    _same_dim(real, fake)
    if real_stats is None:
        real_stats = FeatureStats.from_features(real)
    elif real_stats.dim != real.shape[1]:
        raise UserError(f"real_stats has dimension {real_stats.dim}, features have {real.shape[1]}")
    fid = frechet_distance(real_stats, FeatureStats.from_features(fake))
    kid_mean, kid_std = kid(real, fake, generator=generator)  # the polynomial kernel is not shift-invariant
    out = {"fid": fid, "kid": kid_mean, "kid_std": kid_std}
    real, fake = _centred_pair(real, fake)
    out.update(_neighbourhood_metrics(real, fake, _check_k(k), _check_k(k_density)))
    return out
