"""Config to objects: the one place that turns a :class:`~.config.Config` into the data set,
objective, weighting, clusters, pacing rule and timestep sampler of a run.

Training, sampling, evaluation, the comparison grid and the study all build their pieces here, so
they cannot disagree about, say, which noise levels cluster 3 holds. Nothing here imports the
training loop or Accelerate.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .clustering import cluster_noise_levels, cluster_timesteps
from .config import Config, check_sampler_params
from .data import DatasetBundle, load_dataset
from .errors import ConfigError, UserError
from .objectives import Objective, make_objective
from .pacing import (
    DEFAULT_PATIENCE,
    AdaptivePacing,
    FixedPacing,
    FunctionPacing,
    Pacing,
    adaptive_stage_cap,
    budget_patience,
    budget_stage_cap,
    budget_stage_lengths,
    budget_steps,
    cap_only_reason,
    stages_before_last,
)
from .runs.layout import METRICS
from .runs.records import read_jsonl
from .samplers import SAMPLERS, CurriculumSampler, TimestepSampler, rank_seed, stream_seed, time_averaged_shares
from .schedules import DiscreteSchedule
from .weighting import Weighting, make_weighting

__all__ = [
    "build_dataset",
    "build_objective",
    "build_pacing",
    "build_sampler",
    "build_weighting",
    "cache_dir",
    "check_pacing",
    "clusters_for",
    "matched_shares",
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
    """The pacing rule the config names (None for the uniform baseline and the other samplers).

    ``curriculum.budget_fraction`` f bounds the curriculum to f x ``train.max_steps`` for every pacing: fixed
    pacing unlocks the last stage at exactly round(f x max_steps) (:func:`~.pacing.budget_stage_lengths`), a
    pacing function ends there, and adaptive pacing caps each stage before the last at an equal share of it
    (:func:`~.pacing.budget_stage_cap`), with a patience derived from that cap unless one is set
    (:func:`~.pacing.budget_patience`). Adaptive pacing is refused when its cap ends every stage before
    patience can fire (:func:`check_pacing`).
    """
    cur = config.curriculum
    if cur.order == "none" or cur.sampler != "curriculum":
        return None
    if cur.pacing == "adaptive":
        check_pacing(config)
        return AdaptivePacing(
            _patience(config),
            cur.min_delta,
            cur.ema,
            _stage_cap(config),
            min_delta_mode=cur.min_delta_mode,
            allow_cap_only=cur.allow_cap_only,
        )
    phase = None if cur.budget_fraction is None else budget_steps(cur.budget_fraction, config.train.max_steps)
    if cur.pacing == "fixed":
        if phase is None:
            return FixedPacing(cur.steps_per_stage)
        try:
            return FixedPacing(budget_stage_lengths(phase, stages_before_last(cur.n_clusters, cur.cumulative)))
        except UserError as exc:
            raise ConfigError(f"curriculum.budget_fraction: {cur.budget_fraction} of train.max_steps: {exc}") from None
    return FunctionPacing(cur.pacing, phase or cur.pacing_steps or max(1, config.train.max_steps // 2))


def _budget_cap(config: Config) -> int | None:
    """Each stage before the last's share of ``curriculum.budget_fraction`` of ``train.max_steps`` (None
    without a budget fraction)."""
    cur = config.curriculum
    if cur.budget_fraction is None:
        return None
    stages = stages_before_last(cur.n_clusters, cur.cumulative)
    return budget_stage_cap(cur.budget_fraction, config.train.max_steps, stages)


def _patience(config: Config) -> int:
    """Adaptive pacing's patience: ``curriculum.patience``, else derived from the budget fraction's stage cap,
    else :data:`~.pacing.DEFAULT_PATIENCE`."""
    cur = config.curriculum
    if cur.patience is not None:
        return cur.patience
    cap = _budget_cap(config)
    return DEFAULT_PATIENCE if cap is None else budget_patience(cap, cur.ema)


def _stage_cap(config: Config) -> int | None:
    """The per-stage cap of the config's adaptive pacing: ``curriculum.max_steps_per_stage``, else from
    ``curriculum.cap_multiple`` and ``curriculum.budget_fraction`` of ``train.max_steps``."""
    cur = config.curriculum
    return adaptive_stage_cap(
        _patience(config),
        cur.ema,
        max_steps_per_stage=cur.max_steps_per_stage,
        cap_multiple=cur.cap_multiple,
        budget_cap=_budget_cap(config),
    )


def check_pacing(config: Config) -> str | None:
    """Refuse, with a :class:`~.errors.ConfigError` naming the keys, a config whose adaptive pacing cannot
    fire (:func:`~.pacing.cap_only_reason`), unless ``curriculum.allow_cap_only`` asks for that fixed
    pacing; then return the one-line warning that `train`, `info` and `compare` print. None when the
    pacing can fire, is not adaptive, or there is no curriculum."""
    cur = config.curriculum
    adaptive = cur.order != "none" and cur.sampler == "curriculum" and cur.pacing == "adaptive"
    if not adaptive or cur.only_cluster is not None:
        return None
    if cur.max_steps_per_stage is not None:
        source = f"curriculum.max_steps_per_stage={cur.max_steps_per_stage}"
    else:
        source = f"curriculum.budget_fraction={cur.budget_fraction} of train.max_steps={config.train.max_steps}"
    reason = cap_only_reason(_patience(config), cur.ema, _stage_cap(config), source)
    if reason is None:
        return None
    if cur.budget_fraction is not None and cur.patience is None and cur.max_steps_per_stage is None:
        # the fraction set both the cap and the patience
        key, remedy = "curriculum.budget_fraction", "raise the fraction, use pacing fixed"
    else:
        key, remedy = "curriculum.patience", "raise the cap, lower the patience"
    if not cur.allow_cap_only:
        raise ConfigError(f"{key}: {reason}; {remedy} or set curriculum.allow_cap_only=true")
    return f"{key}: {reason}"


def matched_shares(source: str | Path, n_clusters: int, until: int | None = None) -> list[float]:
    """The time-averaged share of draws each cluster got in a finished run: the ``cluster_draws`` of every
    line of its metrics.jsonl summed (``source`` is the run folder or that file), for ``matched_marginal``;
    with ``until``, of its lines up to that step only (a control matched up to a target step)."""
    key = "curriculum.sampler_params.from"
    if until is not None and (isinstance(until, bool) or not isinstance(until, int) or until < 1):
        raise ConfigError(f"curriculum.sampler_params.until: expected a step >= 1, got {until!r}")
    path = Path(source)
    path = path / METRICS if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"{key}: {str(source)!r} is not a run folder with a {METRICS}")
    try:  # a torn last line is left out with a notice; any other bad line is refused
        records = read_jsonl(path).records
    except UserError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    rows = [
        r["cluster_draws"]
        for r in records
        if isinstance(r.get("cluster_draws"), list) and (until is None or int(r.get("step", 0)) <= until)
    ]
    if not rows:
        raise ConfigError(f"{key}: {path} logs no cluster_draws (a run from before samplers logged them?)")
    if any(len(r) != n_clusters for r in rows):
        raise ConfigError(f"{key}: {path} has {len(rows[0])} clusters, this run {n_clusters}")
    try:
        return time_averaged_shares(rows)
    except UserError as exc:
        raise ConfigError(f"{key}: {path}: {exc}") from None


def _optimal_losses(
    config: Config, objective: Objective, clusters: list[tuple], data: DatasetBundle | None, weighting: Weighting | None
) -> list[float]:
    """Per cluster, the exact optimal loss of the config's data (a Gaussian mixture), in training-loss units."""
    from .metrics.synthetic import optimal_cluster_losses

    data = data if data is not None else build_dataset(config)
    if data.gmm is None:
        raise ConfigError(
            f"curriculum.sampler_params.excess: data set {config.data.dataset!r} has no exact density (use gmm)"
        )
    # A stream of its own, the same on every rank: every rank must hold the same sampler parameters.
    g = torch.Generator().manual_seed(rank_seed(config.seed + 4, 0))
    weighting = weighting if weighting is not None else build_weighting(config)
    return optimal_cluster_losses(objective, weighting, data.gmm, clusters, generator=g)


def build_sampler(
    config: Config,
    objective: Objective,
    rank: int,
    *,
    data: DatasetBundle | None = None,
    weighting: Weighting | None = None,
) -> TimestepSampler:
    """The config's timestep sampler over :func:`clusters_for`, for one rank: the curriculum sampler with
    the config's pacing and order, or the sampler ``curriculum.sampler`` names with its
    ``curriculum.sampler_params`` (``data`` and ``weighting``, when given, spare rebuilding them)."""
    cur = config.curriculum
    if cur.sampler != "curriculum":
        return _build_other_sampler(config, objective, rank, data, weighting)
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
        stream_seed(config.seed, cur.sampler_stream),
        cumulative=cumulative,
        rank=rank,
        density=density,
        signal=cur.signal,
    )


def _build_other_sampler(
    config: Config, objective: Objective, rank: int, data: DatasetBundle | None, weighting: Weighting | None
) -> TimestepSampler:
    """A sampler other than the curriculum, from ``curriculum.sampler`` and ``curriculum.sampler_params``."""
    cur = config.curriculum
    if cur.only_cluster is not None:
        raise ConfigError(
            "curriculum.only_cluster: the difficulty study's one-cluster runs need curriculum.sampler: curriculum"
        )
    params = dict(cur.sampler_params)
    check_sampler_params(cur.sampler, params)
    clusters = clusters_for(config, objective)
    space = objective.noise_space()
    discrete = isinstance(space, DiscreteSchedule)
    if cur.sampler == "learning_progress":
        params["total_steps"] = config.train.max_steps
        excess = params.pop("excess", False)
        if not isinstance(excess, bool):
            raise ConfigError(f"curriculum.sampler_params.excess: expected true or false, got {excess!r}")
        if excess:
            params["optimal_loss"] = _optimal_losses(config, objective, clusters, data, weighting)
    if "from" in params:
        params["shares"] = matched_shares(params.pop("from"), len(clusters), params.pop("until", None))
    if cur.sampler == "speed" and discrete:
        params["schedule"] = space
    try:
        return SAMPLERS[cur.sampler](
            clusters,
            density=None if discrete else space,
            seed=stream_seed(config.seed, cur.sampler_stream),
            rank=rank,
            **params,
        )
    except UserError as exc:
        raise ConfigError(f"curriculum.sampler_params: {exc}") from None


def cache_dir() -> Path:
    """Where computed-once artefacts (text embeddings, latents, reference features) live:
    $DIFFUSION_CURRICULUM_CACHE or ~/.cache/diffusion_curriculum."""
    default = Path.home() / ".cache" / "diffusion_curriculum"
    return Path(os.environ.get("DIFFUSION_CURRICULUM_CACHE", default))
