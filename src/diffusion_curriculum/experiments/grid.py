"""A comparison grid from one YAML file: methods x weightings x seeds on one shared training config.

Every run of a grid has the same data, model, optimizer, step budget and evaluation schedule; only
the curriculum order, the loss weighting and the seed differ.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, ConfigError, load_config
from ..sampler import ORDERS

__all__ = ["PRESETS", "GridConfig", "RunSpec", "load_grid", "preset_path"]

PRESETS = ("smoke", "quick", "gmm", "aa", "uncond", "class", "text", "gpu")
_GRID_KEYS = {"name", "base", "methods", "weightings", "seeds", "eval", "workers", "primary_metric", "aa_seed_offset"}
_EVAL_KEYS = {"every", "n", "steps", "solver", "dense_every", "dense_items", "target_fraction"}
AA = "aa"  # the A/A arm: the uniform baseline again, under other seeds


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid and the config overrides that make it."""

    name: str
    method: str
    weighting: str
    seed: int  # the pairing seed: runs of equal seed are compared with each other
    overrides: dict[str, Any]


@dataclass
class GridConfig:
    name: str
    base: dict[str, Any]
    methods: list[str]
    weightings: list[dict[str, Any]]
    seeds: list[int]
    eval_every: int
    eval_n: int = 1000
    eval_steps: int = 25
    eval_solver: str = "ddim"
    workers: int = 1
    primary_metric: str | None = None
    eval_dense_every: int | None = None  # None: a 50th of the budget
    eval_dense_items: int = 256
    target_fraction: float = 0.5
    aa_seed_offset: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def budget(self) -> int:
        """train.max_steps of every run."""
        return load_config(overrides=_flatten(self.base)).train.max_steps

    @property
    def dense_every(self) -> int:
        """Steps between held-out probe evaluations (the dense curve): eval.dense_every, else budget / 50."""
        return self.eval_dense_every or max(1, self.budget // 50)

    def runs(self) -> list[RunSpec]:
        """Every (method, weighting, seed), baseline first, in a stable order."""
        out = []
        for weighting in self.weightings:
            wname = weighting["name"]
            params = {k: v for k, v in weighting.items() if k != "name"}
            arms = [(m, m, 0) for m in self.methods]
            if self.aa_seed_offset is not None:  # the baseline's order under disjoint seeds, paired by index
                arms.append((AA, "none", self.aa_seed_offset))
            for method, order, offset in arms:
                for seed in self.seeds:
                    overrides = {
                        "curriculum.order": order,
                        "objective.weighting": wname,
                        "objective.weighting_params": params,
                        "seed": seed + offset,
                    }
                    out.append(RunSpec(f"{method}-{wname}-s{seed + offset}", method, wname, seed, overrides))
        return out

    def run_config(self, spec: RunSpec, out_dir: Path) -> Config:
        """The full training config of one run: the base, the run's overrides, the grid's schedule."""
        tree = copy.deepcopy(self.base)
        tree.setdefault("train", {})
        max_steps = load_config(overrides=_flatten(tree)).train.max_steps
        # Checkpoints at every evaluation step, all kept until evaluated: they are the curve's points.
        tree["train"].update(
            checkpoint_every=self.eval_every,
            keep_checkpoints=max_steps // self.eval_every + 2,
            probe_every=self.dense_every,
            probe_items=self.eval_dense_items,
        )
        tree.setdefault("sample", {}).update(steps=self.eval_steps, solver=self.eval_solver)
        tree["name"] = spec.name
        tree["out"] = str(out_dir)
        flat = _flatten(tree)
        flat.update(spec.overrides)
        return load_config(overrides=flat)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "weighting_params":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def preset_path(name: str) -> Path:
    """The YAML file of a shipped preset."""
    if name not in PRESETS:
        raise ConfigError(f"--preset {name!r}: choose from {', '.join(PRESETS)}")
    return Path(str(resources.files("diffusion_curriculum.experiments") / "presets" / f"{name}.yaml"))


def load_grid(path: str | Path) -> GridConfig:
    """Read and validate a grid file; errors name the key, in one line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file {str(path)!r}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise ConfigError(f"grid file {str(path)!r}: not valid YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"grid file {str(path)!r}: expected a mapping at the top level")
    unknown = set(raw) - _GRID_KEYS
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown grid key (known: {', '.join(sorted(_GRID_KEYS))})")
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError("base: expected a mapping of training config sections")
    for key in ("curriculum.order", "objective.weighting", "seed"):
        section, _, name = key.rpartition(".")
        node = base.get(section, {}) if section else base
        if isinstance(node, dict) and name in node:
            raise ConfigError(f"base.{key}: set by the grid (methods, weightings, seeds), not in base")
    load_config(overrides=_flatten(base))  # validates every base key, naming it
    methods = _list(raw, "methods", ["none", "easy_to_hard"])
    for m in methods:
        if m not in ORDERS:
            raise ConfigError(f"methods: {m!r} is not one of {', '.join(ORDERS)}")
    if "none" not in methods:
        raise ConfigError("methods: must include 'none', the uniform baseline every method is compared with")
    weightings = [w if isinstance(w, dict) else {"name": w} for w in _list(raw, "weightings", ["none"])]
    for w in weightings:
        if "name" not in w:
            raise ConfigError(f"weightings: {w!r} needs a name")
        load_config(overrides={"objective.weighting": w["name"]})
    seeds = _list(raw, "seeds", [0])
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds) or len(set(seeds)) != len(
        seeds
    ):
        raise ConfigError("seeds: expected distinct non-negative integers")
    ev = raw.get("eval") or {}
    if not isinstance(ev, dict) or set(ev) - _EVAL_KEYS:
        raise ConfigError(f"eval: expected a mapping with keys {', '.join(sorted(_EVAL_KEYS))}")
    for key in ("every", "n", "steps", "dense_every", "dense_items"):
        if key in ev and not (isinstance(ev[key], int) and not isinstance(ev[key], bool) and ev[key] >= 1):
            raise ConfigError(f"eval.{key}: expected a positive integer, got {ev[key]!r}")
    fraction = ev.get("target_fraction", 0.5)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise ConfigError(f"eval.target_fraction: expected a number in (0, 1], got {fraction!r}")
    offset = raw.get("aa_seed_offset")
    if offset is not None and not (isinstance(offset, int) and not isinstance(offset, bool) and offset > max(seeds)):
        raise ConfigError(f"aa_seed_offset: expected an integer above every seed (disjoint seeds), got {offset!r}")
    if "every" not in ev:
        raise ConfigError("eval.every: required (evaluate every this many steps)")
    workers = raw.get("workers", 1)
    if not (isinstance(workers, int) and workers >= 1):
        raise ConfigError(f"workers: expected a positive integer, got {workers!r}")
    return GridConfig(
        name=str(raw.get("name", path.stem)),
        base=base,
        methods=methods,
        weightings=weightings,
        seeds=seeds,
        eval_every=ev["every"],
        eval_n=ev.get("n", 1000),
        eval_steps=ev.get("steps", 25),
        eval_solver=ev.get("solver", "ddim"),
        workers=workers,
        primary_metric=raw.get("primary_metric"),
        eval_dense_every=ev.get("dense_every"),
        eval_dense_items=ev.get("dense_items", 256),
        target_fraction=float(fraction),
        aa_seed_offset=offset,
        raw=raw,
    )


def _list(raw: dict[str, Any], key: str, default: list) -> list:
    value = raw.get(key, default)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: expected a non-empty list")
    return value
