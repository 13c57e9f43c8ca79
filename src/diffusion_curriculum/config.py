"""Training configuration: typed sections, loaded from YAML, overridden by flags, validated strictly.

Every problem is a :class:`ConfigError` whose message names the key, so the CLI can report it in
one line. Unknown keys are errors, not warnings: a typo must not silently train the default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .atomic import write_atomic
from .clustering import CLUSTER_METHODS
from .errors import ConfigError
from .names import ARCHITECTURES, CONDITIONINGS, OBJECTIVES, PRESETS, SOLVERS
from .pacing import MIN_DELTA_MODES, PACING_FUNCTIONS
from .safe_yaml import YamlTooLarge, check_size, load_yaml, short
from .samplers import ORDERS, SAMPLERS, SIGNALS, sampler_parameters
from .schedules import BETA_SCHEDULES
from .weighting import WEIGHTINGS

__all__ = [
    "Config",
    "ConfigError",
    "check_sampler_params",
    "config_reference",
    "dotted_overrides",
    "dump_config",
    "load_config",
    "parse_override",
    "sampler_options",
]


def _field(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    low: float | None = None,
    strict: bool = False,
    high: float | None = None,
) -> Any:
    """A config field with its help line (shown by ``train --help`` and in docs/training.md), and
    its allowed values: ``choices``, or a lower bound ``low`` (``strict``: the bound itself is refused)
    and an upper bound ``high`` (allowed). Integers without ``high`` are bounded by :data:`INT_MAX`."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if low is not None:
        meta.update(min=low, strict=strict)
    if high is not None:
        meta["max"] = high
    return field(default=default, metadata=meta)


# Every integer is at most this unless its field says otherwise: sizes, steps and counts beyond it
# are typing mistakes, and they overflow the 32-bit indices of the libraries below us.
INT_MAX = 2**31 - 1


@dataclass
class DataConfig:
    dataset: str = _field(
        "digits", "built-in name (digits, mnist5k, gmm, toy2d, ...) or a path to an image folder, .npz or .npy"
    )
    heldout_fraction: float = _field(
        0.1, "share of items held out (the split is fixed by `seed`)", low=0.0, strict=True
    )
    on_bad_file: str = _field(
        "error", "unreadable files in an image folder: stop, or skip them", choices=("error", "skip")
    )
    n_samples: int | None = _field(
        None, "size of a synthetic set (toy2d family, gmm); null: its default", low=1, high=10**9
    )
    dim: int | None = _field(None, "dimension of the `gmm` set; null: its default", low=1, high=10**5)
    vae: str | None = _field(None, "local diffusers AutoencoderKL folder: train on its latents")
    downsample: int = _field(
        1,
        "k > 1 average-pools images over k x k blocks (2: mnist5k 28x28 -> 14x14); the shipped evaluator "
        "scores them pixel-replicated back to its size",
        low=1,
    )


@dataclass
class ModelConfig:
    arch: str = _field("unet", "network architecture", choices=ARCHITECTURES)
    preset: str = _field("tiny", "network size", choices=PRESETS)
    conditioning: str = _field("none", "what the model is conditioned on", choices=CONDITIONINGS)
    text_encoder: str | None = _field(None, "local text-encoder folder (null: the bundled MiniLM)")


@dataclass
class ObjectiveConfig:
    name: str = _field("eps", "prediction target and noise process", choices=OBJECTIVES)
    timesteps: int = _field(1000, "DDPM timesteps T", low=2, high=10**6)
    beta_schedule: str = _field("linear", "DDPM noise schedule", choices=BETA_SCHEDULES)
    weighting: str = _field("none", "per-sample loss weighting", choices=tuple(WEIGHTINGS))
    weighting_params: dict[str, float] = field(
        default_factory=dict, metadata={"help": "the weighting's parameters, e.g. {gamma: 5}"}
    )
    sigma_data: float = _field(
        0.5, "EDM's data standard deviation (also used by the `edm` weighting)", low=1e-4, high=1e4
    )
    flow_logit_std: float | None = _field(
        None,
        "flow matching: null for uniform t, else the scale of a logit-normal t density",
        low=0.0,
        strict=True,
        high=100.0,
    )


@dataclass
class CurriculumConfig:
    order: str = _field(
        "easy_to_hard", "which clusters are unlocked first (`none`: uniform, no curriculum)", choices=ORDERS
    )
    n_clusters: int = _field(20, "number of clusters N the noise levels are grouped into", low=1, high=10**4)
    clustering: str = _field(
        "uniform", "how timesteps are grouped (EDM and flow use equal-probability quantiles)", choices=CLUSTER_METHODS
    )
    pacing: str = _field(
        "adaptive", "when the next cluster is unlocked", choices=("adaptive", "fixed", *PACING_FUNCTIONS)
    )
    patience: int | None = _field(
        None,
        "adaptive pacing: steps without improvement before the next stage (null: 10, or with budget_fraction a "
        "quarter of each stage's share of it, less where that could not fire)",
        low=1,
    )
    min_delta: float = _field(
        0.02,
        "adaptive pacing: the improvement that counts, as a fraction of the stage's best smoothed loss "
        "(min_delta_mode relative) or as a loss difference (absolute)",
        low=0.0,
    )
    min_delta_mode: str = _field("relative", "adaptive pacing: how min_delta is read", choices=MIN_DELTA_MODES)
    ema: float | None = _field(
        0.9,
        "adaptive pacing: decay of the bias-corrected EMA of the watched loss (of its log when min_delta is "
        "relative); comparisons start 1/(1-ema) steps into a stage (null: no smoothing)",
        low=0.0,
    )
    signal: str = _field(
        "geomean",
        "adaptive pacing: the loss watched: geometric mean of the unlocked clusters' losses, the newest "
        "cluster's, or the batch mean (the paper's)",
        choices=SIGNALS,
    )
    max_steps_per_stage: int | None = _field(None, "adaptive pacing: cap on a stage's length", low=1)
    cap_multiple: float | None = _field(
        8.0,
        "adaptive pacing without max_steps_per_stage: cap each stage at this multiple of the shortest stage "
        "patience allows (null: no cap)",
        low=1.0,
    )
    budget_fraction: float | None = _field(
        None,
        "every timestep in play by this fraction of train.max_steps, for any pacing: fixed pacing splits it "
        "into equal stages, pacing functions end at it, adaptive pacing caps each stage before the last at "
        "an equal share of it (null: no such bound)",
        low=0.0,
        strict=True,
        high=1.0,
    )
    allow_cap_only: bool = _field(
        False, "adaptive pacing: accept a cap that ends every stage before patience can (fixed pacing, with a warning)"
    )
    steps_per_stage: int | list[int] | None = _field(  # noqa: RUF009 - _field returns a dataclasses.field
        None, "fixed pacing: steps per stage, one number or one per stage (the last repeats; required for fixed)", low=1
    )
    pacing_steps: int | None = _field(
        None, "pacing functions: steps until every cluster is unlocked (null: half of train.max_steps)", low=1
    )
    cumulative: bool = _field(True, "false: each stage trains its own cluster alone, then a final stage trains all")
    only_cluster: int | None = _field(
        None, "train on this one cluster (0 = least noise) for the whole run: the difficulty study's runs", low=0
    )
    sampler: str = _field(
        "curriculum",
        "the timestep sampler: `curriculum` (the paper's, with order and pacing) or another sampler of "
        "docs/training.md, which ignores order and pacing",
        choices=tuple(SAMPLERS),
    )
    sampler_stream: int = _field(
        0,
        "the timestep sampler's own stream of draws: 0 is the run's seed's; another number draws other timesteps "
        "with the same initialisation, data order and noise (the paired A/A arm of a grid)",
        low=0,
        high=2**32 - 1,
    )
    sampler_params: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "the sampler's parameters, e.g. {epsilon: 0.2} for learning_progress or {from: RUN} for "
            "matched_marginal (docs/training.md)"
        },
    )


@dataclass
class TrainConfig:
    max_steps: int = _field(2000, "training budget in optimizer steps", low=1)
    batch_size: int = _field(64, "global batch (split over processes)", low=1)
    lr: float = _field(1e-3, "AdamW learning rate", low=0.0, strict=True)
    warmup_steps: int = _field(50, "linear learning-rate warm-up", low=0)
    weight_decay: float = _field(0.0, "AdamW weight decay", low=0.0)
    grad_clip: float | None = _field(1.0, "gradient-norm clip (null: none)", low=0.0, strict=True)
    ema_decay: float = _field(0.999, "EMA of the weights (diffusers EMAModel, with its (1+n)/(10+n) warm-up)", low=0.0)
    precision: str = _field(
        "auto", "mixed precision (auto: bf16 on GPUs that have it)", choices=("auto", "no", "fp16", "bf16")
    )
    cond_drop_prob: float = _field(0.1, "label/caption dropout for classifier-free guidance", low=0.0)
    log_every: int = _field(1, "steps between metrics.jsonl lines", low=1)
    sample_every: int | None = _field(1000, "steps between sample grids, and one at the end (null: none)", low=1)
    checkpoint_every: int | None = _field(500, "steps between checkpoints (null: only at the end)", low=1)
    probe_every: int | None = _field(
        None,
        "steps between held-out probe evaluations, written to probe.jsonl: the dense learning curve "
        "that speed-ups are read from (null: none)",
        low=1,
    )
    probe_items: int = _field(256, "held-out draws the probe scores, stratified over the clusters", low=1)
    keep_checkpoints: int = _field(2, "newest checkpoints kept", low=1)
    max_bad_steps: int = _field(
        20, "stop (exit code 3) after this many consecutive steps with a NaN or inf loss; each is skipped", low=1
    )
    dist_timeout_s: float = _field(
        300.0,
        "seconds a process waits in a collective before it gives up on the others",
        low=0.0,
        strict=True,
        high=10**6,
    )
    channels_last: bool = _field(False, "channels-last memory format for image models (a speed option)")
    fused_adamw: bool = _field(True, "the fused AdamW kernel (false: PyTorch's per-tensor loop)")
    compile: bool = _field(False, "torch.compile the network in place (saved weights keep their names)")


@dataclass
class SampleConfig:
    solver: str = _field(
        "ddim", "solver for sample grids and `sample` (EDM and flow use Heun for ddpm/ddim)", choices=SOLVERS
    )
    steps: int = _field(50, "solver steps", low=1, high=10**5)
    n: int = _field(64, "samples in each grid", low=1)
    guidance_scale: float = _field(1.0, "classifier-free guidance scale (conditional models)", low=0.0)


@dataclass
class Config:
    name: str = _field("digits_uncond", "run name: the run folder is runs/<name> unless `out` is given")
    seed: int = _field(0, "master seed: data split, model init, every random stream", low=0, high=2**32 - 1)
    out: str | None = _field(None, "run folder (null: runs/<name>)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    @property
    def out_dir(self) -> Path:
        """``out`` if given, else ``runs/<name>``."""
        return Path(self.out) if self.out else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Cross-field rules that no single key can check."""
        check_name(self.name, "name")
        if self.data.heldout_fraction >= 1.0:
            raise ConfigError("data.heldout_fraction: must be below 1")
        if self.curriculum.ema is not None and self.curriculum.ema >= 1.0:
            raise ConfigError("curriculum.ema: must be below 1 (or null for no smoothing)")
        if self.curriculum.min_delta_mode == "relative" and self.curriculum.min_delta >= 1.0:
            raise ConfigError("curriculum.min_delta: a relative min_delta must be below 1 (a fraction of the loss)")
        if self.train.ema_decay >= 1.0:
            raise ConfigError("train.ema_decay: must be below 1")
        if self.train.cond_drop_prob >= 1.0:
            raise ConfigError("train.cond_drop_prob: must be below 1")
        if self.curriculum.n_clusters > self.objective.timesteps and self.objective.name in ("eps", "v", "x0"):
            raise ConfigError(
                f"curriculum.n_clusters: {self.curriculum.n_clusters} clusters exceed the "
                f"{self.objective.timesteps} timesteps"
            )
        if self.curriculum.only_cluster is not None and self.curriculum.only_cluster >= self.curriculum.n_clusters:
            raise ConfigError(
                f"curriculum.only_cluster: {self.curriculum.only_cluster} is not a cluster index "
                f"(0..{self.curriculum.n_clusters - 1})"
            )
        self._check_budget_fraction()
        if self.model.arch == "dit" and self.model.conditioning != "class":
            raise ConfigError("model.conditioning: the dit architecture needs 'class' conditioning")
        check_sampler_params(self.curriculum.sampler, self.curriculum.sampler_params)

    def _check_budget_fraction(self) -> None:
        """One key sets each length: a budget fraction replaces fixed pacing's stage lengths, a pacing
        function's length and adaptive pacing's explicit cap, so neither may be given beside it."""
        cur = self.curriculum
        length_key = {"fixed": "steps_per_stage", "adaptive": "max_steps_per_stage"}.get(cur.pacing, "pacing_steps")
        if cur.budget_fraction is None:
            if cur.pacing == "fixed" and cur.steps_per_stage is None:
                raise ConfigError(
                    "curriculum.steps_per_stage: required when curriculum.pacing is 'fixed' (or set "
                    "curriculum.budget_fraction)"
                )
        elif getattr(cur, length_key) is not None:
            raise ConfigError(
                f"curriculum.{length_key}: set it or curriculum.budget_fraction, not both (the fraction derives "
                f"{cur.pacing} pacing's lengths)"
            )


# Sampler parameters a run fills in itself (the run's length, a computed loss floor), and the options with
# which a config asks for what the run computes: `excess` (learning_progress: subtract the exact optimal
# loss of Gaussian-mixture data) and `from` (matched_marginal: a finished run whose shares to use).
_RUN_FILLED = {"learning_progress": ("total_steps", "optimal_loss")}
_RUN_OPTIONS = {"learning_progress": ("excess",), "matched_marginal": ("from", "until")}


def sampler_options(name: str) -> tuple[str, ...]:
    """The keys ``curriculum.sampler_params`` may hold for sampler ``name`` (none for ``curriculum``, whose
    parameters are the curriculum keys)."""
    if name == "curriculum":
        return ()
    own = tuple(p for p in sampler_parameters(name) if p not in _RUN_FILLED.get(name, ()))
    return own + _RUN_OPTIONS.get(name, ())


def check_sampler_params(name: str, params: dict[str, Any], key: str = "curriculum.sampler_params") -> None:
    """Refuse (a :class:`~.errors.ConfigError` naming ``key`` and the parameter) parameters that sampler
    ``name`` does not take; their values are checked when the sampler is built."""
    allowed = sampler_options(name)
    for param in params:
        if param not in allowed:
            known = ", ".join(allowed) or "none: set the curriculum keys instead"
            raise ConfigError(f"{key}.{param}: not a parameter of sampler {name!r} (its parameters: {known})")
    if name == "matched_marginal" and ("from" in params) == ("shares" in params):
        raise ConfigError(f"{key}: matched_marginal needs one of from (a finished run) and shares (one per cluster)")
    if "until" in params and "from" not in params:
        raise ConfigError(f"{key}.until: only with from (the last step of the finished run whose shares are matched)")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a type hint; YAML already gives ints, floats, bools and strings."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        listed = [a for a in args if typing.get_origin(a) is list]
        return _coerce(key, value, listed[0] if listed and isinstance(value, list) else args[0])
    if value is None:
        raise ConfigError(f"{key}: must not be null")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {short(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {short(value)}")
        return value
    if hint is float:
        if isinstance(value, str):
            value = _yaml11_float(value)  # PyYAML reads 3e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {short(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {short(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {short(value)}")
        return value
    if origin is list:
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{key}: expected a non-empty list, got {short(value)}")
        return [_coerce(f"{key}[{i}]", v, typing.get_args(hint)[0]) for i, v in enumerate(value)]
    if origin is dict and typing.get_args(hint)[1] is Any:
        if not isinstance(value, dict) or not all(_is_param(v) for v in value.values()):
            raise ConfigError(
                f"{key}: expected a mapping of names to numbers, booleans, strings or lists of numbers, "
                f"got {short(value)}"
            )
        return {str(k): list(v) if isinstance(v, list) else v for k, v in value.items()}
    if origin is dict:
        if isinstance(value, dict):  # PyYAML reads 5e0 (no dot) as a string here too
            value = {k: _yaml11_float(v) if isinstance(v, str) else v for k, v in value.items()}
        if not isinstance(value, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value.values()
        ):
            raise ConfigError(f"{key}: expected a mapping of names to finite numbers, got {short(value)}")
        return {str(k): float(v) for k, v in value.items()}
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # pragma: no cover - schema bug


def _is_param(value: Any) -> bool:
    """A sampler parameter's value: a finite number, a boolean, a string or a list of finite numbers."""

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if isinstance(value, list):
        return all(number(v) for v in value)
    return isinstance(value, bool | str) or number(value)


def _yaml11_float(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _check_field(key: str, value: Any, f: dataclasses.Field) -> None:
    meta = f.metadata
    if value is None:
        return
    if isinstance(value, list):  # each element within the field's bounds
        for i, v in enumerate(value):
            _check_field(f"{key}[{i}]", v, f)
        return
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{key}: {short(value)} is not one of {', '.join(meta['choices'])}")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    high = meta.get("max", INT_MAX if isinstance(value, int) else None)
    low = meta.get("min")
    if (low is not None and (value < low or (meta["strict"] and value == low))) or (high is not None and value > high):
        raise ConfigError(f"{key}: must be {_allowed(meta, high)}, got {short(value)}")


def _allowed(meta: dict[str, Any], high: float | None) -> str:
    """The allowed range of a numeric field in words: "> 0", ">= 1", ">= 1 and <= 10000"."""
    parts = []
    if "min" in meta:
        parts.append(f"{'>' if meta['strict'] else '>='} {_number(meta['min'])}")
    if high is not None:
        parts.append(f"<= {_number(high)}")
    return " and ".join(parts)


def _number(x: float) -> str:
    """A bound as written: integers in full (4294967295, not 4.29497e+09), other numbers with %g."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def check_name(name: str, key: str) -> None:
    """A run or grid name becomes a folder under the output root: it must be one path component, so
    that a shared config cannot write anywhere else."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or name != name.strip():
        raise ConfigError(f"{key}: {short(name)} is not a folder name (one path component, no / or ..)")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {short(data)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise ConfigError(f"{key}: unknown key (known: {', '.join(fields)})")
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{key}.")
        else:
            coerced = _coerce(key, value, hint)
            _check_field(key, coerced, fields[name])
            kwargs[name] = coerced
    return cls(**kwargs)


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` with the value read as YAML (so 1e-3, true, null work)."""
    if "=" not in text:
        raise ConfigError(f"--set {short(text)}: expected KEY=VALUE, e.g. train.lr=1e-3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    except RecursionError:
        raise ConfigError(f"--set {key.strip()}: the value is nested too deeply") from None
    try:
        check_size(value)
    except YamlTooLarge as exc:
        raise ConfigError(f"--set {key.strip()}: the value {exc}") from None
    return key.strip(), value


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{short(key)}: {short(part)} is not a section")
        node = child
    node[parts[-1]] = value


def dotted_overrides(tree: dict[str, Any]) -> dict[str, Any]:
    """A config dict (``Config.to_dict()``) as the dotted-key overrides that :func:`load_config` takes."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key in _hints(Config) and dataclasses.is_dataclass(_hints(Config)[key]):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML file (or start from the defaults), apply dotted-key overrides, validate."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r}: not valid YAML ({exc.__class__.__name__})") from None
        loaded = load_yaml(text, f"config file {str(path)!r}")
        if loaded is not None:
            if not isinstance(loaded, dict):
                raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top level")
            tree = loaded
    _migrate(tree)
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    _migrate(tree)
    config = _build(Config, tree, "")
    config.check()
    return config


# Keys renamed since a release: (section, old name, new name). Saved configs, run folders and grids
# written with the old name load as if they used the new one.
RENAMED_KEYS = (("curriculum", "clusters", "n_clusters"),)


def _migrate(tree: dict[str, Any]) -> None:
    """Rename old keys in a config tree in place; both names at once is an error."""
    for section, old, new in RENAMED_KEYS:
        node = tree.get(section)
        if isinstance(node, dict) and old in node:
            if new in node:
                raise ConfigError(f"{section}.{old}: renamed to {section}.{new}; give only one of them")
            node[new] = node.pop(old)


def config_reference() -> str:
    """Every config key as a Markdown table (key, default, allowed values, meaning): the config
    reference of docs/training.md and the key list of ``train --help``."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key, f in _leaf_fields(Config, ""):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        meta = f.metadata
        if "choices" in meta:
            allowed = ", ".join(f"`{c}`" for c in meta["choices"])
        elif "min" in meta or "max" in meta:
            allowed = _allowed(meta, meta.get("max"))
        else:
            allowed = ""
        rows.append(f"| `{key}` | `{shown}` | {allowed} | {meta.get('help', '')} |")
    return "\n".join(rows) + "\n"


def _leaf_fields(cls: type, prefix: str) -> list[tuple[str, dataclasses.Field]]:
    out = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += _leaf_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", f))
    return out


def dump_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML (every option, so a run can be repeated exactly), atomically:
    a kill mid-write must not leave a torn file that stops the run from being resumed."""
    write_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
