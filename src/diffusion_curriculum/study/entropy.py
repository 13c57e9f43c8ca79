"""Relative entropy between consecutive diffusion marginals, KL(p_{t-1} || p_t), across t.

Time follows the DDPM paper: t = 0 is the data, t = 1..T the noised marginals with
abar_t = alphas_cumprod[t - 1] of our (diffusers, 0-based) schedules; see docs/conventions.md.
Estimators:

- ``conditional``: E_x0 KL(q(x_{t-1}|x0) || q(x_t|x0)) in closed form from E||x0||^2; infinite at
  t = 1, where q(x_0|x0) is a point mass.
- ``exact_mc``: the marginal KL by Monte Carlo with the exact noised densities of a Gaussian mixture
  (``gmm`` and the toy 2-D sets that have one); unbiased, with its standard error.
- ``gaussian``: the marginal KL of the Gaussians with the data's mean and covariance, in closed form;
  exact for Gaussian data, blind to any non-Gaussian structure, infinite at t = 1 when the data
  covariance is singular (constant pixels).
- ``empirical_mc``: the marginal KL of the training set's empirical distribution (a mixture of one
  Gaussian per item) by Monte Carlo; exact for that distribution, but it is what a memorising model
  would learn, so at low t it overstates the KL of the population, whose density is smoother.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data.gmm import GaussianMixture
from ..errors import UserError
from ..schedules import DiscreteSchedule

__all__ = [
    "abar_with_data",
    "conditional_kl",
    "empirical_marginal_kl",
    "gaussian_kl",
    "gaussian_marginal_kl",
    "log_spaced_timesteps",
    "mixture_marginal_kl",
    "run_entropy_study",
]

_F64 = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)


def abar_with_data(schedule: DiscreteSchedule) -> Tensor:
    """(T + 1,) signal variances indexed by paper time: 1 at t = 0 (the data), then alphas_cumprod."""
    return torch.cat([torch.ones(1, dtype=_F64), schedule.alphas_cumprod])


def gaussian_kl(m0: Tensor, v0: Tensor, m1: Tensor, v1: Tensor) -> Tensor:
    """Elementwise KL(N(m0, v0) || N(m1, v1)) of one-dimensional Gaussians; inf where v0 = 0."""
    m0, v0, m1, v1 = (torch.as_tensor(a, dtype=_F64) for a in (m0, v0, m1, v1))
    r = v0 / v1
    return 0.5 * (r - 1.0 - torch.log(r) + (m0 - m1) ** 2 / v1)


def conditional_kl(schedule: DiscreteSchedule, second_moment: float, dim: int) -> Tensor:
    """(T,) E_x0 KL(q(x_{t-1}|x0) || q(x_t|x0)) for t = 1..T, where ``second_moment`` = E||x0||^2
    over the data and ``dim`` its dimension; the t = 1 entry is inf."""
    a = abar_with_data(schedule)
    prev, cur = a[:-1], a[1:]
    per_dim = gaussian_kl(torch.zeros(()), 1.0 - prev, torch.zeros(()), 1.0 - cur)
    mean_part = (prev.sqrt() - cur.sqrt()) ** 2 * float(second_moment) / (2.0 * (1.0 - cur))
    return dim * per_dim + mean_part


def gaussian_marginal_kl(mean: Tensor, cov: Tensor, schedule: DiscreteSchedule) -> Tensor:
    """(T,) KL(p_{t-1} || p_t) for t = 1..T when the data is N(mean, cov) (exact then; otherwise the
    KL of the moment-matched Gaussians). Every marginal N(sqrt(a) mean, a cov + (1 - a) I) shares
    cov's eigenvectors, so the KL is a sum of one-dimensional ones. Eigenvalues below 1e-12 count as
    zero, which makes the t = 1 entry inf."""
    mean = torch.as_tensor(mean, dtype=_F64).flatten()
    cov = torch.as_tensor(cov, dtype=_F64).reshape(mean.numel(), mean.numel())
    lam, vecs = torch.linalg.eigh(cov)
    lam = torch.where(lam > 1e-12, lam, torch.zeros_like(lam))
    mu = vecs.T @ mean
    a = abar_with_data(schedule)[:, None]
    var = a * lam + (1.0 - a)  # (T + 1, D)
    loc = a.sqrt() * mu
    return gaussian_kl(loc[:-1], var[:-1], loc[1:], var[1:]).sum(1)


def log_spaced_timesteps(T: int, points: int, start: int = 1) -> list[int]:
    """About ``points`` distinct integers from ``start`` to T, spaced evenly in log t."""
    if points < 1 or not 1 <= start <= T:
        raise UserError(f"need points >= 1 and 1 <= start <= T, got {points}, {start}, {T}")
    grid = torch.logspace(math.log10(start), math.log10(T), points, dtype=_F64)
    return sorted({min(T, max(start, round(float(v)))) for v in grid})


def _mixture_log_prob(mix: GaussianMixture, x: Tensor, chunk: int) -> Tensor:
    return torch.cat([mix.log_prob(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


def mixture_marginal_kl(
    mixture: GaussianMixture,
    schedule: DiscreteSchedule,
    timesteps: list[int],
    n: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Monte Carlo KL(p_{t-1} || p_t) and its standard error at each t in ``timesteps`` (1..T),
    for data distributed as ``mixture``: n draws from p_{t-1}, exact log densities of both."""
    a = abar_with_data(schedule)
    chunk = max(1, 2_000_000 // max(1, mixture.n_components * mixture.dim))
    kls, ses = [], []
    for t in timesteps:
        if not 1 <= t <= schedule.T:
            raise UserError(f"timestep {t} is outside 1..{schedule.T}")
        prev = mixture.noised(float(a[t - 1].sqrt()), float((1.0 - a[t - 1]).sqrt()))
        cur = mixture.noised(float(a[t].sqrt()), float((1.0 - a[t]).sqrt()))
        x = prev.sample(n, generator)
        ratio = _mixture_log_prob(prev, x, chunk) - _mixture_log_prob(cur, x, chunk)
        kls.append(ratio.mean())
        ses.append(ratio.std() / math.sqrt(n))
    return torch.stack(kls), torch.stack(ses)


def _empirical_log_prob(x: Tensor, items: Tensor, sq_items: Tensor, a: float, chunk: int) -> Tensor:
    """log of the mean over items of N(x; sqrt(a) item, (1 - a) I), for each row of x."""
    var = 1.0 - a
    out = []
    for i in range(0, x.shape[0], chunk):
        xc = x[i : i + chunk]
        d2 = (xc**2).sum(1, keepdim=True) - 2.0 * math.sqrt(a) * xc @ items.T + a * sq_items[None, :]
        out.append(torch.logsumexp(-0.5 * d2.clamp(min=0.0) / var, dim=1))
    dim = x.shape[1]
    return torch.cat(out) - 0.5 * dim * (math.log(var) + _LOG_2PI) - math.log(items.shape[0])


def empirical_marginal_kl(
    data: Tensor,
    schedule: DiscreteSchedule,
    timesteps: list[int],
    n: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Monte Carlo KL(p_{t-1} || p_t) and standard error for the empirical distribution of ``data``
    (N items, flattened), at each t in ``timesteps`` (2..T: at t = 1 the KL is infinite)."""
    items = torch.as_tensor(data).flatten(1).to(_F64)
    sq_items = (items**2).sum(1)
    a = abar_with_data(schedule)
    chunk = max(1, 4_000_000 // items.shape[0])
    kls, ses = [], []
    for t in timesteps:
        if not 2 <= t <= schedule.T:
            raise UserError(f"timestep {t} is outside 2..{schedule.T} (the empirical KL is infinite at t = 1)")
        ap, ac = float(a[t - 1]), float(a[t])
        idx = torch.randint(items.shape[0], (n,), generator=generator)
        noise = torch.randn(n, items.shape[1], generator=generator, dtype=_F64)
        x = math.sqrt(ap) * items[idx] + math.sqrt(1.0 - ap) * noise
        ratio = _empirical_log_prob(x, items, sq_items, ap, chunk) - _empirical_log_prob(x, items, sq_items, ac, chunk)
        kls.append(ratio.mean())
        ses.append(ratio.std() / math.sqrt(n))
    return torch.stack(kls), torch.stack(ses)


def run_entropy_study(
    config: Any,
    out: str | Path,
    *,
    seeds: list[int],
    points: int = 40,
    samples: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Every estimator that applies to ``config``'s data, per seed (data split and Monte Carlo
    draws); writes study.jsonl, kl.png and study.md under ``out``. Returns the study's summary.

    Mixture data (``gmm``, ``8gaussians``, ``moons``, ``swiss_roll``) gets ``exact_mc`` with
    ``samples`` (default 1,000,000) draws per t; other data ``empirical_mc`` with 2,000 by default.
    Both closed forms are evaluated at every t, the Monte Carlo ones at ``points`` log-spaced t.
    """
    from ..config import ConfigError
    from ..jobs import check_claim
    from ..runs.lock import folder_lock
    from .convergence import STUDY_OUTPUTS, _prepare_out

    if config.objective.name not in ("eps", "v", "x0"):
        raise ConfigError(
            "objective.name: the entropy study needs a discrete DDPM schedule (eps, v or x0), "
            f"not {config.objective.name!r}"
        )
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    out = Path(out)
    base = config.to_dict()
    base.pop("out")
    study = {"kind": "entropy", "config": base, "seeds": list(seeds), "points": points, "samples": samples}
    check_claim(out, "study.yaml", "study", overwrite, STUDY_OUTPUTS)  # before the lock: a refused folder is untouched
    with folder_lock(out):
        _prepare_out(out, study, overwrite)
        return _entropy_study(config, out, base, seeds, points, samples, progress)


def _entropy_study(config, out, base, seeds, points, samples, progress) -> dict[str, Any]:
    """The study itself, with ``out`` locked."""
    from ..assembly import build_dataset, build_objective
    from ..config import dotted_overrides, load_config
    from .report import write_entropy_outputs

    schedule = build_objective(config).noise_space()
    T = schedule.T
    start = time.perf_counter()
    records: list[dict[str, Any]] = []
    all_t = list(range(1, T + 1))
    for seed in seeds:
        data = build_dataset(load_config(overrides={**dotted_overrides(base), "seed": seed}))
        x = data.train.flatten(1).to(_F64)
        n_items, dim = x.shape
        closed = {
            "conditional": conditional_kl(schedule, float((x**2).sum(1).mean()), dim),
            "gaussian": gaussian_marginal_kl(x.mean(0), torch.cov(x.T).reshape(dim, dim), schedule),
        }
        for name, kl in closed.items():
            records.append({"estimator": name, "seed": seed, "t": all_t, "kl": _json_values(kl), "stderr": None})
        g = torch.Generator().manual_seed(seed)
        exact = data.gmm is not None
        name, n = ("exact_mc", samples or 1_000_000) if exact else ("empirical_mc", samples or 2_000)
        ts = log_spaced_timesteps(T, points, start=1 if exact else 2)
        kls, ses = [], []
        for t in tqdm(ts, desc=f"{name} seed {seed}", unit="t", disable=not progress):
            if exact:
                kl, se = mixture_marginal_kl(data.gmm, schedule, [t], n, g)
            else:
                kl, se = empirical_marginal_kl(x, schedule, [t], n, g)
            kls.append(float(kl[0]))
            ses.append(float(se[0]))
        records.append({"estimator": name, "seed": seed, "t": ts, "kl": kls, "stderr": ses})
    meta = {
        "kind": "meta",
        "study": "entropy",
        "dataset": config.data.dataset,
        "n_items": n_items,
        "dim": dim,
        "beta_schedule": config.objective.beta_schedule,
        "T": T,
        "seeds": list(seeds),
        "mc_samples": n,
        "points": points,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    return write_entropy_outputs(out, meta, records)


def _json_values(values: Tensor) -> list[float | None]:
    """Floats for JSON, with None for the infinite entries."""
    return [float(v) if math.isfinite(float(v)) else None for v in values]
