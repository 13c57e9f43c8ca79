"""Example and bad arguments for every registered implementation, keyed by its registry name.

The contract tests iterate over the package's registries, not over these tables:

=============  ==========================================  =========================================
kind           registry (in the package)                   tables here
=============  ==========================================  =========================================
pacing         ``pacing.PACINGS`` (name -> class)          ``PACING_EXAMPLES``, ``PACING_BAD``
weighting      ``weighting.WEIGHTINGS`` (name -> class)    ``WEIGHTING_EXAMPLES``, ``WEIGHTING_BAD``
objective      ``objectives.OBJECTIVES`` (names)           ``OBJECTIVE_EXAMPLES``, ``OBJECTIVE_BAD``
sampler        ``sampler.ORDERS`` x every objective's      (none: built from the objective examples)
               noise space x cumulative or not
timestep       ``samplers.SAMPLERS`` (name -> class) x     ``SAMPLER_EXAMPLES``, ``SAMPLER_BAD``
sampler        every objective's noise space
=============  ==========================================  =========================================

A new implementation is tested by registering it in the package and adding a row here: a name
that is registered but has no row makes its contract cases FAIL (see :func:`require`), so nothing
can skip the contract by accident. A row whose name is not registered fails too (a stale row).

Example arguments are lists of keyword dicts for the registered constructor (``make_objective``
for objectives; ``from_schedule(space, 5 clusters, seed=..., rank=..., **row)`` for timestep samplers,
given a deep copy of the row), each one a separate contract case. Bad arguments are ``(kwargs, name)`` pairs:
the constructor must raise :class:`~diffusion_curriculum.errors.UserError` with ``name`` in its
message. An empty list of bad arguments is allowed (a constructor without parameters) but must be
written down.
"""

from __future__ import annotations

from typing import Any

import pytest

from diffusion_curriculum.pacing import PACING_FUNCTIONS, AdaptivePacing

NAN, INF = float("nan"), float("inf")

# ----- pacing (pacing.PACINGS) ---------------------------------------------------------------
PACING_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "fixed": [{"steps_per_stage": 7}, {"steps_per_stage": [3, 9, 5]}],
    "adaptive": [
        {"patience": 3},
        {"patience": 4, "min_delta": 0.01, "ema": 0.5, "max_steps_per_stage": 12},
        {"patience": 5, "ema": 0.9, "min_delta": 0.01, "min_delta_mode": "absolute"},
        {"patience": 2, "ema": None, "min_delta": 0.0},  # the paper's plain rule
        {"patience": 30, "ema": 0.9, "max_steps_per_stage": 8, "allow_cap_only": True},  # fixed pacing, asked for
    ],
    # one case per pacing function, so that a new function kind is covered once listed there
    "function": [{"kind": k, "total_steps": 150} for k in PACING_FUNCTIONS]
    + [{"kind": "root", "total_steps": 120, "start_fraction": 0.3}],
}

PACING_BAD: dict[str, list[tuple[dict[str, Any], str]]] = {
    "fixed": [
        ({"steps_per_stage": 0}, "steps_per_stage"),
        ({"steps_per_stage": -3}, "steps_per_stage"),
        ({"steps_per_stage": 2.5}, "steps_per_stage"),
        ({"steps_per_stage": True}, "steps_per_stage"),
        ({"steps_per_stage": None}, "steps_per_stage"),
        ({"steps_per_stage": "12"}, "steps_per_stage"),
        ({"steps_per_stage": []}, "steps_per_stage"),
        ({"steps_per_stage": [2, 0]}, "steps_per_stage"),
    ],
    "adaptive": [
        ({"patience": 0}, "patience"),
        ({"patience": -1}, "patience"),
        ({"patience": 1.5}, "patience"),
        ({"patience": True}, "patience"),
        ({"patience": 2, "min_delta": -1.0}, "min_delta"),
        ({"patience": 2, "min_delta": NAN}, "min_delta"),
        ({"patience": 2, "min_delta": "0.1"}, "min_delta"),
        ({"patience": 2, "ema": 1.0}, "ema"),
        ({"patience": 2, "ema": -0.1}, "ema"),
        ({"patience": 2, "ema": NAN}, "ema"),
        ({"patience": 2, "ema": "0.9"}, "ema"),
        ({"patience": 2, "max_steps_per_stage": 0}, "max_steps_per_stage"),
        ({"patience": 2, "max_steps_per_stage": 2.5}, "max_steps_per_stage"),
        ({"patience": 20, "ema": 0.9, "max_steps_per_stage": 29}, "max_steps_per_stage"),
        ({"patience": 5, "ema": None, "max_steps_per_stage": 5}, "max_steps_per_stage"),
        ({"patience": 2, "min_delta": 1.0}, "min_delta"),
        ({"patience": 2, "min_delta_mode": "percent"}, "min_delta_mode"),
        ({"patience": 2, "min_delta_mode": None}, "min_delta_mode"),
    ],
    "function": [
        ({"kind": "cubic", "total_steps": 10}, "kind"),
        ({"kind": "linear", "total_steps": 0}, "total_steps"),
        ({"kind": "linear", "total_steps": 1.5}, "total_steps"),
        ({"kind": "linear", "total_steps": 10, "start_fraction": 0.0}, "start_fraction"),
        ({"kind": "linear", "total_steps": 10, "start_fraction": 1.5}, "start_fraction"),
        ({"kind": "linear", "total_steps": 10, "start_fraction": NAN}, "start_fraction"),
        ({"kind": "linear", "total_steps": 10, "start_fraction": "0.5"}, "start_fraction"),
    ],
}

# ----- weighting (weighting.WEIGHTINGS) ------------------------------------------------------
WEIGHTING_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "none": [{}],
    "min_snr": [{}, {"gamma": 1.0}],
    "soft_min_snr": [{}, {"gamma": 0.5}],
    "p2": [{}, {"k": 2.0, "gamma": 0.5}, {"gamma": 0.0}],
    "edm": [{}],
}

_GAMMA_POSITIVE = [
    ({"gamma": 0.0}, "gamma"),
    ({"gamma": -1.0}, "gamma"),
    ({"gamma": NAN}, "gamma"),
    ({"gamma": INF}, "gamma"),
    ({"gamma": "5"}, "gamma"),
]
WEIGHTING_BAD: dict[str, list[tuple[dict[str, Any], str]]] = {
    "none": [],
    "min_snr": _GAMMA_POSITIVE,
    "soft_min_snr": _GAMMA_POSITIVE,
    "p2": [
        ({"k": 0.0}, "k"),
        ({"k": NAN}, "k"),
        ({"k": "1"}, "k"),
        ({"gamma": -0.5}, "gamma"),
        ({"gamma": NAN}, "gamma"),
        ({"gamma": "1"}, "gamma"),
    ],
    "edm": [],
}

# ----- objectives (objectives.OBJECTIVES, built by make_objective) ----------------------------
OBJECTIVE_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "eps": [{"num_train_timesteps": 100}],
    "v": [{"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2"}],
    "x0": [{"num_train_timesteps": 100, "beta_schedule": "scaled_linear"}],
    "edm": [{}, {"sigma_data": 1.0, "sigma_min": 0.01, "sigma_max": 20.0}],
    "flow": [{}, {"flow_logit_mean": 0.5, "flow_logit_std": 1.0}],
}

_DDPM_BAD = [
    ({"num_train_timesteps": 0}, "num_train_timesteps"),
    ({"num_train_timesteps": 2.5}, "num_train_timesteps"),
    ({"beta_schedule": "bogus"}, "beta_schedule"),
    ({"sigma_data": 0.0}, "sigma_data"),
    ({"sigma_data": NAN}, "sigma_data"),
]
OBJECTIVE_BAD: dict[str, list[tuple[dict[str, Any], str]]] = {
    "eps": _DDPM_BAD,
    "v": _DDPM_BAD,
    "x0": _DDPM_BAD,
    "edm": [
        ({"sigma_data": -1.0}, "sigma_data"),
        ({"sigma_data": NAN}, "sigma_data"),
        ({"sigma_min": 0.0}, "sigma_min"),
        ({"sigma_min": 10.0, "sigma_max": 1.0}, "sigma_max"),
        ({"sigma_max": INF}, "sigma_max"),
        ({"p_std": 0.0}, "p_std"),
        ({"p_std": NAN}, "p_std"),
        ({"p_mean": NAN}, "p_mean"),
    ],
    "flow": [
        ({"sigma_data": 0.0}, "sigma_data"),
        ({"flow_logit_std": 0.0}, "logit_std"),
        ({"flow_logit_std": NAN}, "logit_std"),
        ({"flow_logit_mean": INF}, "logit_mean"),
    ],
}


# ----- timestep samplers (samplers.SAMPLERS, built by from_schedule on 5 clusters) ---------------
SAMPLER_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    # a pacing with state worth restoring (EMA, best, counter) that still advances within 9 steps
    "curriculum": [
        {"order": "easy_to_hard", "pacing": AdaptivePacing(3, ema=0.5, max_steps_per_stage=9)},
        {"order": "none"},
    ],
    "learning_progress": [
        # horizons 5 and 20 steps: adapting from step 20, annealing over steps 160..240
        {"total_steps": 400, "min_horizon": 5},
        {"total_steps": 100, "min_horizon": 2, "importance_weights": True, "anneal_start": 0.2, "anneal_end": 0.9},
        {"total_steps": 300, "min_horizon": 3, "optimal_loss": [0.05, 0.04, 0.03, 0.02, 0.01], "clip": 8.0},
    ],
    "speed": [{}, {"ratio": 2.0, "threshold": 0.5, "change_aware": False}, {"lam": 1.0, "grid": 50}],
    "loss_importance": [{"history": 2}, {"per_timestep": False, "uniform_prob": 0.1}],
    "logit_normal": [{}, {"loc": 0.5, "scale": 2.0}],
    "matched_marginal": [{"shares": [0.1, 0.2, 0.3, 0.2, 0.2]}, {"shares": [0, 0, 3, 0, 1]}],
    # world sizes above 1: the contract builds rank 1 too, which a single process holds only as one of several
    "variance_importance": [
        {"world_size": 2},
        {"history": 3, "min_ess": 0.9, "world_size": 4},
        {"balance": True, "world_size": 2},
    ],
}

_NOT_FRACTIONS = [-0.1, 1.5, NAN, "0.5"]
SAMPLER_BAD: dict[str, list[tuple[dict[str, Any], str]]] = {
    "curriculum": [
        ({"order": "backwards"}, "order"),
        ({"order": "easy_to_hard", "pacing": None}, "pacing"),
        ({"order": "none", "signal": "median"}, "signal"),
    ],
    "learning_progress": [
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": 2.5}, "total_steps"),
        ({"total_steps": 10, "min_horizon": 0}, "min_horizon"),
        ({"total_steps": 10, "slow_multiple": 1.0}, "slow_multiple"),
        ({"total_steps": 10, "share_floor": 0.0}, "share_floor"),
        ({"total_steps": 10, "clip": 0.5}, "clip"),
        ({"total_steps": 10, "anneal_start": 0.7, "anneal_end": 0.5}, "anneal_end"),
        ({"total_steps": 10, "importance_weights": 1}, "importance_weights"),
        ({"total_steps": 10, "optimal_loss": [0.1, 0.2]}, "optimal_loss"),
        ({"total_steps": 10, "optimal_loss": [0.1, -0.2, 0.0, 0.0, 0.0]}, "optimal_loss"),
        ({"total_steps": 10, "excess_floor": 0.0}, "excess_floor"),
    ]
    + [({"total_steps": 10, k: v}, k) for k in ("epsilon", "anneal_start", "horizon_fraction") for v in _NOT_FRACTIONS],
    "speed": [
        ({"ratio": 0.0}, "ratio"),
        ({"ratio": NAN}, "ratio"),
        ({"ratio": "5"}, "ratio"),
        ({"change_aware": "yes"}, "change_aware"),
        ({"grid": 1}, "grid"),
    ]
    + [({k: v}, k) for k in ("threshold", "lam") for v in _NOT_FRACTIONS],
    "loss_importance": [
        ({"history": 0}, "history"),
        ({"history": 1.5}, "history"),
        ({"uniform_prob": 1.5}, "uniform_prob"),
        ({"uniform_prob": NAN}, "uniform_prob"),
        ({"per_timestep": "yes"}, "per_timestep"),
    ],
    "logit_normal": [
        ({"scale": 0.0}, "scale"),
        ({"scale": INF}, "scale"),
        ({"loc": NAN}, "loc"),
        ({"loc": "0"}, "loc"),
    ],
    "matched_marginal": [
        ({"shares": [0.5, 0.5]}, "shares"),
        ({"shares": [1, 1, 1, 1, -1]}, "shares"),
        ({"shares": [0, 0, 0, 0, 0]}, "shares"),
        ({"shares": [1, 1, 1, 1, NAN]}, "shares"),
        ({"shares": "equal"}, "shares"),
    ],
    "variance_importance": [
        ({"history": 0}, "history"),
        ({"history": 2.5}, "history"),
        ({"min_ess": 0.0}, "min_ess"),
        ({"min_ess": 1.5}, "min_ess"),
        ({"min_ess": NAN}, "min_ess"),
        ({"world_size": 0}, "world_size"),
        ({"world_size": 1, "rank": 1}, "world_size"),
        ({"balance": "yes"}, "balance"),
    ],
}


# ----- helpers ---------------------------------------------------------------------------------
def require(table: dict[str, Any], name: str, table_name: str, registry: str) -> Any:
    """The row for ``name``, or a test failure saying that the registered name has none."""
    if name not in table:
        pytest.fail(
            f"{name!r} is registered in {registry} but has no row in tests/contract/tables.py:{table_name}; "
            f"add its example/bad arguments there so that it runs the shared contract"
        )
    return table[name]


def example(table: dict[str, list[Any]], name: str, row: Any, table_name: str, registry: str) -> Any:
    """``row`` when given, else the first row of ``name`` (failing when the name has none)."""
    if row is not None:
        return row
    rows = require(table, name, table_name, registry)
    if not rows:
        pytest.fail(f"tests/contract/tables.py:{table_name}[{name!r}] is empty; give at least one example")
    return rows[0]


def cases(registry: Any, table: dict[str, list[Any]]) -> list[Any]:
    """pytest params (name, example) for every registered name; a name without a row still gets
    one case (example ``None``), which then fails through :func:`require`."""
    out = []
    for name in registry:
        rows = table.get(name) or [None]
        for i, row in enumerate(rows):
            out.append(pytest.param(name, row, id=f"{name}-{i}"))
    return out


def bad_cases(registry: Any, table: dict[str, list[tuple[dict[str, Any], str]]]) -> list[Any]:
    """pytest params (name, kwargs, argument name) for every registered name's bad arguments;
    a name without a row gets one failing case."""
    out = []
    for name in registry:
        if name not in table:
            out.append(pytest.param(name, None, None, id=f"{name}-missing"))
            continue
        for kwargs, arg in table[name]:
            out.append(pytest.param(name, kwargs, arg, id=f"{name}-{arg}-{kwargs[arg] if arg in kwargs else ''}"))
    return out
