"""A comparison grid from one YAML file: methods x weightings x seeds on one shared training config.

Every run of a grid has the same data, model, optimizer, step budget and evaluation schedule; only
the method (a curriculum order, or another timestep sampler with its parameters), the loss weighting
and the seed differ.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, CurriculumConfig, check_name, check_sampler_params, load_config
from ..errors import UserError
from ..runs.layout import METRICS
from ..runs.records import read_jsonl
from ..safe_yaml import load_yaml, short
from ..samplers import ORDERS, SAMPLERS
from ..slurm import LAUNCHERS, SlurmOptions

__all__ = [
    "PRESETS",
    "GridConfig",
    "Method",
    "RunSpec",
    "VerdictPlan",
    "load_grid",
    "mean_stage_lengths",
    "preset_path",
    "verdict_plan",
]

PRESETS = (
    "smoke",
    "quick",
    "gmm",
    "curriculum_gmm",
    "digits",
    "curriculum_digits",
    "aa",
    "uncond",
    "class",
    "text",
    "gpu",
    "samplers",
    "samplers_digits",
    "variance_dev",
    "variance_gmm",
    "variance_digits",
    "variance_uncond",
    "variance_class",
)
_GRID_KEYS = {
    "name",
    "base",
    "methods",
    "weightings",
    "seeds",
    "eval",
    "workers",
    "primary_metric",
    "aa_seed_offset",
    "verdict",
}
ENDPOINTS = ("e1", "e2", "loss")
"""The verdict's endpoints (docs/experiments.md): ``e1`` steps to the baseline's half-budget value of the
sample metric (``primary_metric``); ``e2`` steps to balanced denoising, every cluster's loss relative to the
same seed's baseline at half the budget; ``loss`` steps to the baseline's half-budget dense curve (L_simple
on images, the exact excess error on synthetic data)."""
PRIMARY_TESTS = ("t",)  # the paired t-test on log steps


@dataclass(frozen=True)
class VerdictPlan:
    """What a grid's verdict tests, fixed in its preset before any run: the co-primary endpoints (Holm over
    them and the methods), the primary test, and the per-cluster probe curve E2 reads. Without a ``verdict``
    key a grid keeps the earlier single endpoint, the dense curve (``loss``)."""

    primary: tuple[str, ...] = ("loss",)
    test: str = "t"
    per_cluster: str | None = None  # probe.jsonl's per-cluster key for E2: excess_error or heldout_cluster_loss
    family: tuple[str, ...] | None = None  # the methods Holm's correction covers (None: every comparison)
    holm: str = "joint"  # one Holm family over endpoints x methods, or one per endpoint ("per_endpoint")
    decide: str | None = None  # the endpoint the decision rule reads (helps / hurts / no effect / undecided)
    margin: float = 0.10  # the decision rule's equivalence margin: no effect within 1/(1 + margin)..1 + margin
    contrasts: tuple[tuple[str, str], ...] = ()  # (a, b): method a against method b head to head, in Holm's family


_GRID_KEYS |= {"launcher", "slurm"}  # where the runs run: local worker processes or Slurm jobs (docs/experiments.md)
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
    weighting is the source, and must finish first). ``pacing_from``, for a curriculum order with ``from``:
    the adaptive curriculum method whose runs of the same weighting (every seed) set this one's fixed
    pacing, their mean realised stage lengths (:func:`mean_stage_lengths`): adaptive timing against the
    same schedule on average."""

    label: str
    sampler: str
    order: str
    params: dict[str, Any]
    source: str | None = None
    pacing_from: str | None = None
    curriculum: dict[str, Any] = field(default_factory=dict)  # this method's own curriculum keys

    @property
    def is_paired_aa(self) -> bool:
        """The paired A/A arm: the uniform baseline itself but for its timestep stream
        (``curriculum.sampler_stream``), so it shares initialisation, data order and noise with the baseline."""
        return (
            self.sampler == "curriculum"
            and self.order == "none"
            and set(self.curriculum) == {"sampler_stream"}
            and self.curriculum["sampler_stream"] != 0
        )


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
    launcher: str = "local"  # local worker processes, or one Slurm job per run (compare --launcher)
    slurm: SlurmOptions = field(default_factory=SlurmOptions)  # what each run's Slurm job asks for

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
                        "curriculum.sampler_params": self._sampler_params(method),
                        "curriculum.order": method.order,
                        **{f"curriculum.{k}": v for k, v in method.curriculum.items()},
                        "objective.weighting": wname,
                        "objective.weighting_params": params,
                        "seed": seed + offset,
                    }
                    after: tuple[str, ...] = ()
                    if method.source is not None:
                        after = (f"{method.source}-{wname}-s{seed + offset}",)
                    elif method.pacing_from is not None:  # every seed of the source, for their mean
                        after = tuple(f"{method.pacing_from}-{wname}-s{s}" for s in self.seeds)
                    name = f"{method.label}-{wname}-s{seed + offset}"
                    out.append(RunSpec(name, method.label, wname, seed, overrides, after))
        return out

    def _sampler_params(self, method: Method) -> dict[str, Any]:
        """The method's sampler parameters, ``until: target`` resolved to the target step
        (``target_fraction`` of the budget): a matched control matched up to the step it is judged at."""
        params = dict(method.params)
        if params.get("until") == "target":
            params["until"] = round(self.target_fraction * self.budget)
        return params

    def _method(self, label: str) -> Method:
        return self.method_specs.get(label) or Method(label, "curriculum", label, {})

    def run_config(self, spec: RunSpec, out_dir: Path, *, resolve: bool = True) -> Config:
        """The full training config of one run: the base, the run's overrides, the grid's schedule.

        A run whose pacing comes from other runs (``pacing_from``) reads them here, so they must be done;
        ``resolve=False`` checks the rest of its config before they are (its pacing left as the base's)."""
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
        method = self._method(spec.method)
        if method.source is not None:  # matched_marginal from a method of this grid: its run of the same seed
            flat["curriculum.sampler_params"] = {
                **flat["curriculum.sampler_params"],
                "from": str(Path(out_dir).parent / spec.after[0]),
            }
        if method.pacing_from is not None and resolve:
            config = load_config(overrides=flat)
            sources = [Path(out_dir).parent / name for name in spec.after]
            flat["curriculum.pacing"] = "fixed"
            flat["curriculum.steps_per_stage"] = mean_stage_lengths(sources, config.train.max_steps)
        return load_config(overrides=flat)


def mean_stage_lengths(runs: list[Path], budget: int) -> list[int]:
    """The fixed pacing that unlocks each stage at the mean step the finished ``runs`` (adaptive curricula
    of one order) unlocked it: per stage s >= 2, the step of its transition averaged over the runs, a
    run that never reached it counting the budget (censored at the end of training), rounded; the
    lengths are the differences (at least 1), one per stage before the last.

    The control that separates adaptive timing from the schedule it produces on average (issue 17:
    "the same with fixed pacing of the realised mean stage lengths")."""
    transitions: list[dict[int, int]] = []
    n_stages = 0
    for run in runs:
        path = run / METRICS
        try:
            records = read_jsonl(path).records
        except UserError as exc:
            raise ConfigError(f"methods: pacing source {run.name}: {exc}") from None
        if not records or "n_stages" not in records[0]:
            raise ConfigError(f"methods: pacing source {run.name}: {path} logs no curriculum stages")
        n_stages = max(n_stages, int(records[0]["n_stages"]))
        transitions.append({int(t[1]): int(t[0]) for r in records for t in r.get("stage_changes", [])})
    if n_stages < 2:
        raise ConfigError("methods: pacing source has a single stage; nothing to pace")
    starts = [0]
    for stage in range(2, n_stages + 1):
        mean = sum(t.get(stage, budget) for t in transitions) / len(transitions)
        starts.append(max(starts[-1] + 1, round(mean)))
    return [b - a for a, b in itertools.pairwise(starts)]


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
    plan = verdict_plan(raw.get("verdict"))  # refused now, before any run, if it is not a plan
    for label in plan.family or ():
        if label not in methods or label == "none":
            raise ConfigError(f"verdict.family: {label!r} is not a method of this grid other than the baseline")
    for label in (label for pair in plan.contrasts for label in pair):
        if label not in methods or label == "none":
            raise ConfigError(f"verdict.contrasts: {label!r} is not a method of this grid other than the baseline")
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
        method_specs={label: m for label, m in specs.items() if m != Method(label, "curriculum", label, {})},
        launcher=_launcher(raw.get("launcher", "local")),
        slurm=SlurmOptions.from_mapping(raw.get("slurm")),
    )


def _launcher(value: Any) -> str:
    if value not in LAUNCHERS:
        raise ConfigError(f"launcher: expected one of {', '.join(LAUNCHERS)}, got {short(value)}")
    return value


def _methods(entries: list) -> dict[str, Method]:
    """The grid's methods by label, from its ``methods`` list (see docs/experiments.md): a curriculum order
    or a sampler name, or a mapping ``{name: SAMPLER, label: LABEL, PARAM: VALUE, ...}``."""
    samplers = [s for s in SAMPLERS if s != "curriculum"]
    out: dict[str, Method] = {}
    for entry in entries:
        curriculum: dict[str, Any] = {}
        if isinstance(entry, dict):
            params = dict(entry)
            name = params.pop("name", None)
            label = params.pop("label", name)
            curriculum = _curriculum_keys(params.pop("curriculum", {}), label)
        else:
            name, label, params = entry, entry, {}
        if not isinstance(name, str) or name not in (*ORDERS, *samplers):
            raise ConfigError(f"methods: {name!r} is not one of {', '.join((*ORDERS, *samplers))}")
        if not isinstance(label, str) or not _LABEL.fullmatch(label) or label == AA:
            raise ConfigError(f"methods: label {label!r} must be letters, digits and _ (and not {AA!r})")
        if label in out:
            raise ConfigError(f"methods: {label!r} appears twice; give the second one another label")
        if name in ORDERS:
            if set(params) - {"from"}:
                raise ConfigError(
                    f"methods.{label}: curriculum order {name!r} takes one parameter, from (a method whose mean "
                    f"stage lengths set its fixed pacing), not {sorted(set(params) - {'from'})}"
                )
            out[label] = Method(label, "curriculum", name, {}, pacing_from=params.get("from"), curriculum=curriculum)
        else:
            check_sampler_params(name, params, key=f"methods.{label}")
            if "until" in params and params["until"] != "target" and not isinstance(params["until"], int):
                raise ConfigError(f"methods.{label}.until: expected a step or 'target', got {short(params['until'])}")
            out[label] = Method(label, name, "none", params, curriculum=curriculum)
    for label, method in list(out.items()):
        if method.pacing_from is not None:
            source = out.get(method.pacing_from) if isinstance(method.pacing_from, str) else None
            if source is None or source.sampler != "curriculum" or source.order == "none" or source.pacing_from:
                raise ConfigError(
                    f"methods.{label}.from: {method.pacing_from!r} must be another curriculum order of this grid "
                    "(its adaptive runs set this method's fixed pacing)"
                )
            continue
        source = method.params.get("from")
        if source is None:
            continue
        if not isinstance(source, str):
            raise ConfigError(f"methods.{label}.from: expected a method of this grid or a run folder, got {source!r}")
        if source in out:
            if source == label or out[source].source is not None or out[source].params.get("from") is not None:
                raise ConfigError(f"methods.{label}.from: {source!r} must be another method that has no source itself")
            out[label] = dataclasses.replace(method, source=source)
        elif not Path(source).exists():
            raise ConfigError(f"methods.{label}.from: {source!r} is neither a method of this grid nor a run folder")
    return out


_PER_CLUSTER = ("excess_error", "heldout_cluster_loss")
_HOLM = ("joint", "per_endpoint")
_PLAN_KEYS = ("primary", "test", "per_cluster", "family", "holm", "decide", "margin", "contrasts")


def verdict_plan(value: Any) -> VerdictPlan:
    """The grid's ``verdict`` key (``{primary: [e1, e2], test: t, per_cluster: excess_error}``) as a plan, or a
    :class:`~..errors.ConfigError` naming what is wrong; load_grid checks it, the report reads it."""
    if value is None:
        return VerdictPlan()
    if not isinstance(value, dict) or set(value) - set(_PLAN_KEYS):
        raise ConfigError(f"verdict: expected a mapping with keys {', '.join(_PLAN_KEYS)}, got {short(value)}")
    primary = value.get("primary", ["loss"])
    if not isinstance(primary, list) or not primary or not all(e in ENDPOINTS for e in primary):
        raise ConfigError(f"verdict.primary: expected a list of endpoints out of {', '.join(ENDPOINTS)}")
    if len(set(primary)) != len(primary):
        raise ConfigError("verdict.primary: an endpoint appears twice")
    test = value.get("test", "t")
    if test not in PRIMARY_TESTS:
        raise ConfigError(f"verdict.test: expected one of {', '.join(PRIMARY_TESTS)}, got {short(test)}")
    per_cluster = value.get("per_cluster")
    if per_cluster is not None and per_cluster not in _PER_CLUSTER:
        raise ConfigError(f"verdict.per_cluster: expected one of {', '.join(_PER_CLUSTER)}, got {short(per_cluster)}")
    if "e2" in primary and per_cluster is None:
        raise ConfigError("verdict.per_cluster: required for e2 (the probe's per-cluster curve: excess_error on gmm)")
    family = value.get("family")
    if family is not None and not (
        isinstance(family, list)
        and family
        and all(isinstance(m, str) for m in family)
        and len(set(family)) == len(family)
    ):
        raise ConfigError(f"verdict.family: expected a list of distinct method labels, got {short(family)}")
    holm = value.get("holm", "joint")
    if holm not in _HOLM:
        raise ConfigError(f"verdict.holm: expected one of {', '.join(_HOLM)}, got {short(holm)}")
    decide, margin = value.get("decide"), value.get("margin", 0.10)
    if decide is not None and decide not in primary:
        raise ConfigError(f"verdict.decide: expected a primary endpoint ({', '.join(primary)}), got {short(decide)}")
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 < margin < 1:
        raise ConfigError(f"verdict.margin: expected a fraction in (0, 1), got {short(margin)}")
    contrasts = value.get("contrasts", [])
    if not (
        isinstance(contrasts, list)
        and all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(m, str) for m in pair) and pair[0] != pair[1]
            for pair in contrasts
        )
        and len({tuple(pair) for pair in contrasts}) == len(contrasts)
    ):
        raise ConfigError(
            f"verdict.contrasts: expected a list of distinct [method, other method] label pairs, got {short(contrasts)}"
        )
    return VerdictPlan(
        tuple(primary),
        test,
        per_cluster,
        None if family is None else tuple(family),
        holm,
        decide,
        float(margin),
        tuple((a, b) for a, b in contrasts),
    )


# Set by a method's name and parameters, or by the grid for the difficulty study: not per-method keys.
_NOT_PER_METHOD = {"order", "sampler", "sampler_params", "only_cluster"}


def _curriculum_keys(value: Any, label: Any) -> dict[str, Any]:
    """A method's own curriculum keys (``methods: [{..., curriculum: {pacing: fixed, ...}}]``): pacing, its
    lengths, patience, budget fraction, number of clusters, the sampler's stream; their values are checked
    with the run's config, before any run starts."""
    keys = set(CurriculumConfig.__dataclass_fields__) - _NOT_PER_METHOD
    if not isinstance(value, dict):
        raise ConfigError(f"methods.{label}.curriculum: expected a mapping of curriculum keys, got {short(value)}")
    for key in value:
        if key not in keys:
            raise ConfigError(
                f"methods.{label}.curriculum.{key}: not a per-method curriculum key (one of {', '.join(sorted(keys))})"
            )
    return dict(value)


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
