"""Config to objects: the one place that turns a :class:`~.config.Config` into the data set,
objective, weighting, clusters, pacing rule and timestep sampler of a run.

Training, sampling, evaluation, the comparison grid and the study all build their pieces here, so
they cannot disagree about, say, which noise levels cluster 3 holds. Nothing here imports the
training loop or Accelerate.
"""

from __future__ import annotations

import os
from pathlib import Path

from .clustering import cluster_noise_levels, cluster_timesteps
from .config import Config
from .data import DatasetBundle, load_dataset
from .objectives import Objective, make_objective
from .pacing import AdaptivePacing, FixedPacing, FunctionPacing, Pacing
from .sampler import CurriculumSampler
from .schedules import DiscreteSchedule
from .weighting import Weighting, make_weighting

__all__ = [
    "adaptive_stage_cap",
    "build_dataset",
    "build_objective",
    "build_pacing",
    "build_sampler",
    "build_weighting",
    "cache_dir",
    "clusters_for",
]


def build_dataset(config: Config) -> DatasetBundle:
    """The data set and split a config names (the trainer and evaluation must see the same)."""
    return load_dataset(
        config.data.dataset,
        seed=config.seed,
        heldout_fraction=config.data.heldout_fraction,
        captions=config.model.conditioning == "text",
        on_bad_file=config.data.on_bad_file,
        n_samples=config.data.n_samples,
        dim=config.data.dim,
        downsample=config.data.downsample,
    )


def build_objective(config: Config) -> Objective:
    """The training objective (prediction target, noise schedule or density) the config names."""
    obj = config.objective
    return make_objective(
        obj.name,
        num_train_timesteps=obj.timesteps,
        beta_schedule=obj.beta_schedule,
        sigma_data=obj.sigma_data,
        flow_logit_std=obj.flow_logit_std,
    )


def build_weighting(config: Config) -> Weighting:
    """The per-sample loss weighting the config names."""
    return make_weighting(config.objective.weighting, **config.objective.weighting_params)


def _clustering_method(config: Config, objective: Objective) -> str | None:
    """The config's clustering for discrete timesteps; continuous noise levels use quantiles."""
    return None if objective.name in ("edm", "flow") else config.curriculum.clustering


def clusters_for(config: Config, objective: Objective | None = None) -> list[tuple]:
    """The cluster intervals of the config's noise space, hardest (least noise) first: what the
    sampler trains on, evaluation reports per cluster, and the study trains one model per."""
    objective = objective or build_objective(config)
    space = objective.noise_space()
    method = _clustering_method(config, objective)
    if isinstance(space, DiscreteSchedule):
        return cluster_timesteps(space, config.curriculum.n_clusters, method or "uniform")
    return cluster_noise_levels(space, config.curriculum.n_clusters, method or "quantile")


def build_pacing(config: Config) -> Pacing | None:
    """The pacing rule the config names (None for the uniform baseline).

    Adaptive pacing gets a per-stage cap unless one is given: the stages before the last share
    ``curriculum.budget_fraction`` of ``train.max_steps``. Without it, a loss that keeps creeping
    down (the EMA-smoothed loss of a small model on one cluster does, for thousands of steps) never
    triggers the patience rule, and the run ends before the hard clusters are ever trained.
    """
    cur = config.curriculum
    if cur.order == "none":
        return None
    if cur.pacing == "adaptive":
        return AdaptivePacing(cur.patience, cur.min_delta, cur.ema, adaptive_stage_cap(config))
    if cur.pacing == "fixed":
        return FixedPacing(cur.steps_per_stage)
    total = cur.pacing_steps or max(1, config.train.max_steps // 2)
    return FunctionPacing(cur.pacing, total)


def adaptive_stage_cap(config: Config) -> int | None:
    """``max_steps_per_stage`` if set, else the share of the budget each early stage may take."""
    cur = config.curriculum
    if cur.max_steps_per_stage is not None or cur.budget_fraction is None:
        return cur.max_steps_per_stage
    stages_before_last = cur.n_clusters - 1 if cur.cumulative else cur.n_clusters
    if stages_before_last < 1:
        return None
    return max(1, int(cur.budget_fraction * config.train.max_steps / stages_before_last))


def build_sampler(config: Config, objective: Objective, rank: int) -> CurriculumSampler:
    """The curriculum sampler over :func:`clusters_for`, with the config's pacing and order, for one rank."""
    cur = config.curriculum
    order, pacing, cumulative = cur.order, build_pacing(config), cur.cumulative
    if cur.only_cluster is not None:
        # The study's per-interval runs: stage 1 of a non-cumulative order that starts with this
        # cluster, and a pacing whose first stage outlasts the run.
        k = cur.only_cluster
        order = [k, *(i for i in range(cur.n_clusters) if i != k)]
        pacing, cumulative = FixedPacing(config.train.max_steps + 1), False
    space = objective.noise_space()
    density = None if isinstance(space, DiscreteSchedule) else space
    return CurriculumSampler(
        clusters_for(config, objective),
        pacing,
        order,
        config.seed,
        cumulative=cumulative,
        rank=rank,
        density=density,
    )


def cache_dir() -> Path:
    """Where computed-once artefacts (text embeddings, latents, reference features) live:
    $DIFFUSION_CURRICULUM_CACHE or ~/.cache/diffusion_curriculum."""
    default = Path.home() / ".cache" / "diffusion_curriculum"
    return Path(os.environ.get("DIFFUSION_CURRICULUM_CACHE", default))
