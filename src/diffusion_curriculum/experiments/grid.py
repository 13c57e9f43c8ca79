"""A comparison grid from one YAML file: methods x weightings x seeds on one shared training config.

Every run of a grid has the same data, model, optimizer, step budget and evaluation schedule; only
the method (a curriculum order, or another timestep sampler with its parameters), the loss weighting
and the seed differ.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, check_name, check_sampler_params, load_config
from ..safe_yaml import load_yaml, short
from ..sampler import ORDERS
from ..samplers import SAMPLERS

__all__ = ["PRESETS", "GridConfig", "Method", "RunSpec", "load_grid", "preset_path"]

PRESETS = ("smoke", "quick", "gmm", "aa", "uncond", "class", "text", "gpu", "samplers", "samplers_digits")
_GRID_KEYS = {"name", "base", "methods", "weightings", "seeds", "eval", "workers", "primary_metric", "aa_seed_offset"}
_EVAL_KEYS = {
    "every",
    "n",
    "steps",
    "solver",
    "dense_every",
    "dense_items",
    "target_fraction",
    "evaluator",
    "inception_weights",
}
AA = "aa"  # the A/A arm: the uniform baseline again, under other seeds
_LABEL = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class Method:
    """One method of a grid: the label its runs and the report use, the timestep sampler with its parameters
    (``curriculum`` with an order for the paper's curriculum and its ablations), and, for ``matched_marginal``
    with ``from`` naming another method of the grid, that method's label (its run of the same seed and
    weighting is the source, and must finish first)."""

    label: str
    sampler: str
    order: str
    params: dict[str, Any]
    source: str | None = None


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid and the config overrides that make it."""

    name: str
    method: str  # the method's label
    weighting: str
    seed: int  # the pairing seed: runs of equal seed are compared with each other
    overrides: dict[str, Any]
    after: tuple[str, ...] = ()  # runs that must be done before this one starts


@dataclass
class GridConfig:
    name: str
    base: dict[str, Any]
    methods: list[str]  # labels, in grid order
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
    eval_evaluator: str | None = None  # a folder written by fit-evaluator for the grid's own data
    eval_inception_weights: str | None = None  # Inception-v3 FID weights: score images in its features
    raw: dict[str, Any] = field(default_factory=dict)
    method_specs: dict[str, Method] = field(default_factory=dict)  # by label; a label without one is an order

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
            arms = [(self._method(m), 0) for m in self.methods]
            if self.aa_seed_offset is not None:  # the baseline's order under disjoint seeds, paired by index
                arms.append((Method(AA, "curriculum", "none", {}), self.aa_seed_offset))
            for method, offset in arms:
                for seed in self.seeds:
                    overrides = {
                        "curriculum.sampler": method.sampler,
                        "curriculum.sampler_params": dict(method.params),
                        "curriculum.order": method.order,
                        "objective.weighting": wname,
                        "objective.weighting_params": params,
                        "seed": seed + offset,
                    }
                    after = () if method.source is None else (f"{method.source}-{wname}-s{seed + offset}",)
                    name = f"{method.label}-{wname}-s{seed + offset}"
                    out.append(RunSpec(name, method.label, wname, seed, overrides, after))
        return out

    def _method(self, label: str) -> Method:
        return self.method_specs.get(label) or Method(label, "curriculum", label, {})

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
        if spec.after:  # matched_marginal from a method of this grid: its run of the same seed and weighting
            flat["curriculum.sampler_params"] = {
                **flat["curriculum.sampler_params"],
                "from": str(Path(out_dir).parent / spec.after[0]),
            }
        return load_config(overrides=flat)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key not in ("weighting_params", "sampler_params"):
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
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"grid file {str(path)!r}: not valid YAML (not UTF-8 text)") from None
    raw = load_yaml(text, f"grid file {str(path)!r}")  # refuses alias bombs and deep nesting
    if not isinstance(raw, dict):
        raise ConfigError(f"grid file {str(path)!r}: expected a mapping at the top level")
    unknown = set(raw) - _GRID_KEYS
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown grid key (known: {', '.join(sorted(_GRID_KEYS))})")
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError("base: expected a mapping of training config sections")
    for key in ("curriculum.order", "curriculum.sampler", "curriculum.sampler_params", "objective.weighting", "seed"):
        section, _, name = key.rpartition(".")
        node = base.get(section, {}) if section else base
        if isinstance(node, dict) and name in node:
            raise ConfigError(f"base.{key}: set by the grid (methods, weightings, seeds), not in base")
    load_config(overrides=_flatten(base))  # validates every base key, naming it
    specs = _methods(_list(raw, "methods", ["none", "easy_to_hard"]))
    methods = list(specs)
    if "none" not in specs or (specs["none"].sampler, specs["none"].order) != ("curriculum", "none"):
        raise ConfigError("methods: must include 'none', the uniform baseline every method is compared with")
    weightings = [w if isinstance(w, dict) else {"name": w} for w in _list(raw, "weightings", ["none"])]
    for w in weightings:
        if "name" not in w:
            raise ConfigError(f"weightings: {short(w)} needs a name")
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
            raise ConfigError(f"eval.{key}: expected a positive integer, got {short(ev[key])}")
    fraction = ev.get("target_fraction", 0.5)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise ConfigError(f"eval.target_fraction: expected a number in (0, 1], got {short(fraction)}")
    for key in ("evaluator", "inception_weights"):
        if ev.get(key) is not None and not (isinstance(ev[key], str) and ev[key]):
            raise ConfigError(f"eval.{key}: expected a path, got {short(ev[key])}")
    offset = raw.get("aa_seed_offset")
    if offset is not None and not (isinstance(offset, int) and not isinstance(offset, bool) and offset > max(seeds)):
        raise ConfigError(f"aa_seed_offset: expected an integer above every seed (disjoint seeds), got {short(offset)}")
    if "every" not in ev:
        raise ConfigError("eval.every: required (evaluate every this many steps)")
    workers = raw.get("workers", 1)
    if not (isinstance(workers, int) and workers >= 1):
        raise ConfigError(f"workers: expected a positive integer, got {short(workers)}")
    return GridConfig(
        name=_grid_name(raw.get("name", path.stem)),
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
        eval_evaluator=ev.get("evaluator"),
        eval_inception_weights=ev.get("inception_weights"),
        raw=raw,
        method_specs={label: m for label, m in specs.items() if m.sampler != "curriculum"},
    )


def _methods(entries: list) -> dict[str, Method]:
    """The grid's methods by label, from its ``methods`` list (see docs/experiments.md): a curriculum order
    or a sampler name, or a mapping ``{name: SAMPLER, label: LABEL, PARAM: VALUE, ...}``."""
    samplers = [s for s in SAMPLERS if s != "curriculum"]
    out: dict[str, Method] = {}
    for entry in entries:
        if isinstance(entry, dict):
            params = dict(entry)
            name = params.pop("name", None)
            label = params.pop("label", name)
        else:
            name, label, params = entry, entry, {}
        if not isinstance(name, str) or name not in (*ORDERS, *samplers):
            raise ConfigError(f"methods: {name!r} is not one of {', '.join((*ORDERS, *samplers))}")
        if not isinstance(label, str) or not _LABEL.fullmatch(label) or label == AA:
            raise ConfigError(f"methods: label {label!r} must be letters, digits and _ (and not {AA!r})")
        if label in out:
            raise ConfigError(f"methods: {label!r} appears twice; give the second one another label")
        if name in ORDERS:
            if params:
                raise ConfigError(f"methods.{label}: curriculum order {name!r} takes no parameters: {sorted(params)}")
            out[label] = Method(label, "curriculum", name, {})
        else:
            check_sampler_params(name, params, key=f"methods.{label}")
            out[label] = Method(label, name, "none", params)
    for label, method in list(out.items()):
        source = method.params.get("from")
        if source is None:
            continue
        if not isinstance(source, str):
            raise ConfigError(f"methods.{label}.from: expected a method of this grid or a run folder, got {source!r}")
        if source in out:
            if source == label or out[source].source is not None or out[source].params.get("from") is not None:
                raise ConfigError(f"methods.{label}.from: {source!r} must be another method that has no source itself")
            out[label] = Method(label, method.sampler, method.order, method.params, source)
        elif not Path(source).exists():
            raise ConfigError(f"methods.{label}.from: {source!r} is neither a method of this grid nor a run folder")
    return out


def _grid_name(name: Any) -> str:
    """The grid's name, which names its default folder runs/compare_<name>: one path component."""
    if not isinstance(name, str | int) or isinstance(name, bool):
        raise ConfigError(f"name: expected a string, got {short(name)}")
    check_name(str(name), "name")
    return str(name)


def _list(raw: dict[str, Any], key: str, default: list) -> list:
    value = raw.get(key, default)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: expected a non-empty list")
    return value
