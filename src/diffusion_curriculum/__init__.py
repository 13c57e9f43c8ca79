"""diffusion-curriculum: denoising-task-difficulty curricula for training diffusion models.

The core (schedules, clustering, pacing, samplers, weighting) depends on torch and numpy only.
"""

from typing import Any

# Public names and the core module each lives in. They are imported on first use (PEP 562), so that
# `import diffusion_curriculum` (and the CLI's start-up, where a Ctrl-C must end in one line) does
# not import torch until something needs it.
_EXPORTS = {
    "cluster_noise_levels": "clustering",
    "cluster_timesteps": "clustering",
    "PACINGS": "pacing",
    "STAGE_CHANGE_CAUSES": "pacing",
    "AdaptivePacing": "pacing",
    "FixedPacing": "pacing",
    "FunctionPacing": "pacing",
    "pacing_fraction": "pacing",
    "shortest_adaptive_stage": "pacing",
    "ORDERS": "samplers",
    "SIGNALS": "samplers",
    "CurriculumSampler": "samplers",
    "SAMPLERS": "samplers",
    "LearningProgressSampler": "samplers",
    "LogitNormal": "samplers",
    "LossImportance": "samplers",
    "MatchedMarginal": "samplers",
    "SpeeD": "samplers",
    "TimestepSampler": "samplers",
    "VarianceImportance": "samplers",
    "DiscreteSchedule": "schedules",
    "EDMNoise": "schedules",
    "FlowMatchingTime": "schedules",
    "P2": "weighting",
    "TARGETS": "weighting",
    "WEIGHTINGS": "weighting",
    "EDMWeighting": "weighting",
    "MinSNR": "weighting",
    "SoftMinSNR": "weighting",
    "Unweighted": "weighting",
    "make_weighting": "weighting",
    "target_factor": "weighting",
}

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
    "VarianceImportance",
    "__version__",
    "cluster_noise_levels",
    "cluster_timesteps",
    "make_weighting",
    "pacing_fraction",
    "shortest_adaptive_stage",
    "target_factor",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
