"""Timestep samplers: who decides which noise levels each batch trains on.

Every sampler lives here: the protocol and the base they share (:mod:`.base`: the clusters, the
counter-based draw stream, stratified batches), the paper's curriculum (:mod:`.curriculum`), the
density-based base of the others (:mod:`.cluster`) and the others, one module each.

Every sampler implements :class:`~.base.TimestepSampler` (``sample``, ``loss_weights``, ``observe``,
``stats``, ``state_dict``/``load_state_dict``) over discrete timesteps or continuous noise levels, and
is registered in :data:`SAMPLERS` by the name that ``curriculum.sampler``, ``compare`` grids and the
contract tests (tests/contract/) use:

==================== ============================================ ==========================================
name                 class                                        what
==================== ============================================ ==========================================
``curriculum``       :class:`~diffusion_curriculum.CurriculumSampler` the paper's curriculum (Kim et al.,
                                                                  arXiv 2403.10348); order ``none`` is the
                                                                  uniform baseline
``learning_progress`` :class:`LearningProgressSampler`            ours: samples where the loss moves,
                                                                  uniform at the end
``speed``            :class:`SpeeD`                               asymmetric sampling and change-aware
                                                                  weighting (arXiv 2405.17403)
``loss_importance``  :class:`LossImportance`                      Improved DDPM's importance sampling
                                                                  (arXiv 2102.09672)
``logit_normal``     :class:`LogitNormal`                         SD3's logit-normal t (arXiv 2403.03206)
``matched_marginal`` :class:`MatchedMarginal`                     fixed cluster shares, e.g. a finished
                                                                  run's time-averaged ones
``variance_importance`` :class:`VarianceImportance`              ours: variance-optimal importance
                                                                  sampling over the clusters, nothing
                                                                  to tune
==================== ============================================ ==========================================

Like the rest of the core, this package imports only torch, numpy and the core.
"""

from __future__ import annotations

import inspect

from ..errors import UserError
from .base import NoiseSpaceSampler, TimestepSampler, draw_seed, rank_seed, stratified_counts, stream_seed
from .cluster import ClusterSampler
from .curriculum import ORDERS, SIGNALS, CurriculumSampler
from .learning_progress import LearningProgressSampler
from .loss_importance import LossImportance
from .static import LogitNormal, MatchedMarginal, SpeeD, time_averaged_shares
from .variance_importance import VarianceImportance

__all__ = [
    "ORDERS",
    "SAMPLERS",
    "SIGNALS",
    "ClusterSampler",
    "CurriculumSampler",
    "LearningProgressSampler",
    "LogitNormal",
    "LossImportance",
    "MatchedMarginal",
    "NoiseSpaceSampler",
    "SpeeD",
    "TimestepSampler",
    "VarianceImportance",
    "draw_seed",
    "rank_seed",
    "sampler_parameters",
    "stratified_counts",
    "stream_seed",
    "time_averaged_shares",
]

SAMPLERS: dict[str, type] = {
    "curriculum": CurriculumSampler,
    "learning_progress": LearningProgressSampler,
    "speed": SpeeD,
    "loss_importance": LossImportance,
    "logit_normal": LogitNormal,
    "matched_marginal": MatchedMarginal,
    "variance_importance": VarianceImportance,
}
"""Every timestep sampler by name. The contract tests in tests/contract/ iterate over this registry
and fail for a name that has no example arguments there."""

# Constructor arguments that describe the noise space or the process, not the sampler's rule.
_STRUCTURAL = ("self", "clusters", "density", "schedule", "seed", "rank", "world_size")


def sampler_parameters(name: str) -> tuple[str, ...]:
    """The keyword parameters of sampler ``name``'s rule (its constructor's, without the clusters,
    noise space, seed and rank); a :class:`~diffusion_curriculum.errors.UserError` for an unknown name."""
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; choose from {tuple(SAMPLERS)}")
    params = inspect.signature(SAMPLERS[name].__init__).parameters
    return tuple(p for p in params if p not in _STRUCTURAL)
