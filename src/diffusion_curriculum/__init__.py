"""diffusion-curriculum: denoising-task-difficulty curricula for training diffusion models.

The core (schedules, clustering, pacing, sampler, weighting) depends on torch and numpy only.
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
    "MinSNR",
    "SoftMinSNR",
    "Unweighted",
    "__version__",
    "cluster_noise_levels",
    "cluster_timesteps",
    "make_weighting",
    "pacing_fraction",
    "shortest_adaptive_stage",
    "target_factor",
]
