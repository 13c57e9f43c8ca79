"""A Gaussian mixture with diagonal covariances and its exact diffusion quantities.

For x_t = alpha x0 + sigma eps with x0 from the mixture, x_t is again a mixture (means alpha mu_k,
variances alpha^2 var_k + sigma^2), so its score and the optimal epsilon-prediction
E[eps | x_t] = -sigma grad log p_t(x_t) (Tweedie) are known in closed form: the floor of any
denoiser's loss. All computation is float64 on the device of the input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import UserError

__all__ = ["GaussianMixture", "default_gmm"]

_F64 = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)


class GaussianMixture:
    """Mixture of K Gaussians in D dimensions with diagonal covariances (float64, on the CPU).

    ``weights`` (K,) sum to 1, ``means`` (K, D), ``variances`` (K, D) or (K,) for isotropic ones.
    """

    def __init__(self, weights: Tensor, means: Tensor, variances: Tensor) -> None:
        w = torch.as_tensor(weights, dtype=_F64).detach().cpu()
        mu = torch.as_tensor(means, dtype=_F64).detach().cpu()
        var = torch.as_tensor(variances, dtype=_F64).detach().cpu()
        if mu.ndim != 2 or w.shape != (mu.shape[0],):
            raise UserError(f"expected weights (K,) and means (K, D), got {tuple(w.shape)} and {tuple(mu.shape)}")
        if var.ndim == 1:
            var = var[:, None].expand_as(mu)
        if var.shape != mu.shape:
            raise UserError(f"expected variances (K,) or (K, D) = {tuple(mu.shape)}, got {tuple(var.shape)}")
        if (w < 0).any() or not math.isclose(float(w.sum()), 1.0, abs_tol=1e-9):
            raise UserError("weights must be non-negative and sum to 1")
        if not (var > 0).all() or not torch.isfinite(mu).all():
            raise UserError("variances must be positive and means finite")
        self.weights, self.means, self.variances = w, mu, var.contiguous()

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return self.weights.numel()

    @property
    def dim(self) -> int:
        """Dimension D."""
        return self.means.shape[1]

    @property
    def mean(self) -> Tensor:
        """Exact mean of the mixture, (D,)."""
        return self.weights @ self.means

    @property
    def variance(self) -> Tensor:
        """Exact per-coordinate variance of the mixture, (D,)."""
        return self.weights @ (self.variances + self.means**2) - self.mean**2

    def standardized(self) -> GaussianMixture:
        """The same mixture shifted to mean 0 and scaled by one factor to mean coordinate variance 1."""
        scale = float(self.variance.mean().sqrt())
        return GaussianMixture(self.weights, (self.means - self.mean) / scale, self.variances / scale**2)

    def noised(self, alpha: float, sigma: float) -> GaussianMixture:
        """The mixture of x_t = alpha x0 + sigma eps: means alpha mu_k, variances alpha^2 var_k + sigma^2."""
        return GaussianMixture(self.weights, alpha * self.means, alpha**2 * self.variances + sigma**2)

    def sample_with_components(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw n points (n, D) float64 and the int64 component each came from, on the CPU."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=_F64)
        return self.means[k] + self.variances[k].sqrt() * z, k

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw n points, (n, D) float64 on the CPU."""
        return self.sample_with_components(n, generator)[0]

    def _joint(self, x: Tensor, alpha: float | Tensor, sigma: float | Tensor) -> tuple[Tensor, Tensor]:
        """log(w_k N(x; alpha mu_k, alpha^2 var_k + sigma^2)) (N, K) and the component scores (N, K, D)."""
        x = torch.as_tensor(x).to(_F64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise UserError(f"expected points of shape (N, {self.dim}), got {tuple(x.shape)}")
        a = torch.as_tensor(alpha, dtype=_F64, device=x.device).reshape(-1, 1, 1)
        s = torch.as_tensor(sigma, dtype=_F64, device=x.device).reshape(-1, 1, 1)
        var = a**2 * self.variances.to(x.device) + s**2
        diff = x[:, None, :] - a * self.means.to(x.device)
        log_norm = -0.5 * (diff**2 / var + torch.log(var) + _LOG_2PI).sum(-1)
        return self.weights.to(x.device).log() + log_norm, -diff / var

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log density at each of the points x (N, D), float64 (N,)."""
        return torch.logsumexp(self._joint(x, 1.0, 0.0)[0], dim=1)

    def responsibilities(self, x: Tensor) -> Tensor:
        """Posterior probability of each component given each point, (N, K)."""
        return torch.softmax(self._joint(x, 1.0, 0.0)[0], dim=1)

    def noised_score(self, x_t: Tensor, alpha: float | Tensor, sigma: float | Tensor) -> Tensor:
        """grad log p_t(x_t) of the noised mixture; alpha, sigma scalars or one per point (N,)."""
        log_joint, comp_score = self._joint(x_t, alpha, sigma)
        return (torch.softmax(log_joint, dim=1)[..., None] * comp_score).sum(1)

    def score(self, x: Tensor) -> Tensor:
        """grad log p(x) at each point, (N, D) float64."""
        return self.noised_score(x, 1.0, 0.0)

    def optimal_eps(self, x_t: Tensor, alpha: float | Tensor, sigma: float | Tensor) -> Tensor:
        """E[eps | x_t] = -sigma grad log p_t(x_t): the MSE-optimal epsilon prediction, (N, D) float64."""
        s = torch.as_tensor(sigma, dtype=_F64, device=x_t.device).reshape(-1, 1)
        return -s * self.noised_score(x_t, alpha, sigma)


def default_gmm(dim: int = 2, n_components: int = 8, layout_seed: int = 0) -> GaussianMixture:
    """The ``gmm`` dataset's mixture: seeded random means, isotropic spreads and weights, standardized.

    Means are N(0, 3^2 I) draws, component standard deviations uniform in [0.3, 1], weights
    proportional to uniform [0.5, 1.5] draws; then :meth:`GaussianMixture.standardized`. The
    layout depends on ``dim``, ``n_components`` and ``layout_seed`` only, not on the data seed.
    """
    if dim < 1 or n_components < 1:
        raise UserError(f"dim and n_components must be >= 1, got {dim} and {n_components}")
    g = torch.Generator().manual_seed(int(layout_seed))
    means = 3.0 * torch.randn(n_components, dim, generator=g, dtype=_F64)
    stds = 0.3 + 0.7 * torch.rand(n_components, generator=g, dtype=_F64)
    weights = 0.5 + torch.rand(n_components, generator=g, dtype=_F64)
    return GaussianMixture(weights / weights.sum(), means, stds**2).standardized()
