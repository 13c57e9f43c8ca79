"""diffusion-curriculum: denoising-task-difficulty curricula for training diffusion models.

The core (schedules, clustering, pacing, sampler, samplers, weighting) depends on torch and numpy only.
"""

from .clustering import cluster_noise_levels, cluster_timesteps
from .pacing import (
    PACINGS,
    STAGE_CHANGE_CAUSES,
    AdaptivePacing,
    FixedPacing,
    FunctionPacing,
    pacing_fraction,
    shortest_adaptive_stage,
)
from .sampler import ORDERS, SIGNALS, CurriculumSampler
from .samplers import (
    SAMPLERS,
    LearningProgressSampler,
    LogitNormal,
    LossImportance,
    MatchedMarginal,
    SpeeD,
    TimestepSampler,
)
from .schedules import DiscreteSchedule, EDMNoise, FlowMatchingTime
from .weighting import (
    P2,
    TARGETS,
    WEIGHTINGS,
    EDMWeighting,
    MinSNR,
    SoftMinSNR,
    Unweighted,
    make_weighting,
    target_factor,
)

__version__ = "0.1.0"

__all__ = [
    "ORDERS",
    "P2",
    "PACINGS",
    "SAMPLERS",
    "SIGNALS",
    "STAGE_CHANGE_CAUSES",
    "TARGETS",
    "WEIGHTINGS",
    "AdaptivePacing",
    "CurriculumSampler",
    "DiscreteSchedule",
    "EDMNoise",
    "EDMWeighting",
    "FixedPacing",
    "FlowMatchingTime",
    "FunctionPacing",
    "LearningProgressSampler",
    "LogitNormal",
    "LossImportance",
    "MatchedMarginal",
    "MinSNR",
    "SoftMinSNR",
    "SpeeD",
    "TimestepSampler",
    "Unweighted",
    "__version__",
    "cluster_noise_levels",
    "cluster_timesteps",
    "make_weighting",
    "pacing_fraction",
    "shortest_adaptive_stage",
    "target_factor",
]
