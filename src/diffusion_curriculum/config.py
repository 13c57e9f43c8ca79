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

from .errors import ConfigError
from .runs.atomic import write_atomic

__all__ = ["Config", "ConfigError", "dotted_overrides", "dump_config", "load_config", "parse_override"]


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


def _min(value: float, *, strict: bool = False) -> dict[str, Any]:
    return {"min": value, "strict": strict}


@dataclass
class DataConfig:
    dataset: str = "digits"
    heldout_fraction: float = field(default=0.1, metadata=_min(0.0, strict=True))
    on_bad_file: str = field(default="error", metadata=_choices("error", "skip"))
    n_samples: int | None = field(default=None, metadata=_min(1))
    dim: int | None = field(default=None, metadata=_min(1))
    vae: str | None = None
    downsample: int = field(default=1, metadata=_min(1))


@dataclass
class ModelConfig:
    arch: str = field(default="unet", metadata=_choices("unet", "dit", "mlp"))
    preset: str = field(default="tiny", metadata=_choices("tiny", "small", "base"))
    conditioning: str = field(default="none", metadata=_choices("none", "class", "text"))
    text_encoder: str | None = None


@dataclass
class ObjectiveConfig:
    name: str = field(default="eps", metadata=_choices("eps", "v", "x0", "edm", "flow"))
    timesteps: int = field(default=1000, metadata=_min(2))
    beta_schedule: str = field(default="linear", metadata=_choices("linear", "scaled_linear", "squaredcos_cap_v2"))
    weighting: str = field(default="none", metadata=_choices("none", "min_snr", "soft_min_snr", "p2", "edm"))
    weighting_params: dict[str, float] = field(default_factory=dict)
    sigma_data: float = field(default=0.5, metadata=_min(0.0, strict=True))
    flow_logit_std: float | None = field(default=None, metadata=_min(0.0, strict=True))


@dataclass
class CurriculumConfig:
    order: str = field(default="easy_to_hard", metadata=_choices("easy_to_hard", "hard_to_easy", "random", "none"))
    clusters: int = field(default=20, metadata=_min(1))
    clustering: str = field(default="uniform", metadata=_choices("uniform", "snr", "log_snr"))
    pacing: str = field(default="adaptive", metadata=_choices("adaptive", "fixed", "linear", "root", "geometric"))
    patience: int = field(default=100, metadata=_min(1))
    min_delta: float = field(default=0.0, metadata=_min(0.0))
    ema: float | None = field(default=0.99, metadata=_min(0.0))
    max_steps_per_stage: int | None = field(default=None, metadata=_min(1))
    budget_fraction: float | None = field(default=0.5, metadata=_min(0.0, strict=True))
    steps_per_stage: int | None = field(default=None, metadata=_min(1))
    pacing_steps: int | None = field(default=None, metadata=_min(1))
    cumulative: bool = True
    only_cluster: int | None = field(default=None, metadata=_min(0))


@dataclass
class TrainConfig:
    max_steps: int = field(default=2000, metadata=_min(1))
    batch_size: int = field(default=64, metadata=_min(1))
    lr: float = field(default=1e-3, metadata=_min(0.0, strict=True))
    warmup_steps: int = field(default=50, metadata=_min(0))
    weight_decay: float = field(default=0.0, metadata=_min(0.0))
    grad_clip: float | None = field(default=1.0, metadata=_min(0.0, strict=True))
    ema_decay: float = field(default=0.999, metadata=_min(0.0))
    precision: str = field(default="auto", metadata=_choices("auto", "no", "fp16", "bf16"))
    cond_drop_prob: float = field(default=0.1, metadata=_min(0.0))
    log_every: int = field(default=1, metadata=_min(1))
    sample_every: int | None = field(default=1000, metadata=_min(1))
    checkpoint_every: int | None = field(default=500, metadata=_min(1))
    keep_checkpoints: int = field(default=2, metadata=_min(1))
    max_bad_steps: int = field(default=20, metadata=_min(1))
    dist_timeout_s: float = field(default=300.0, metadata=_min(0.0, strict=True))
    channels_last: bool = False
    fused_adamw: bool = True
    compile: bool = False


@dataclass
class SampleConfig:
    solver: str = field(default="ddim", metadata=_choices("ddpm", "ddim", "euler", "heun"))
    steps: int = field(default=50, metadata=_min(1))
    n: int = field(default=64, metadata=_min(1))
    guidance_scale: float = field(default=1.0, metadata=_min(0.0))


@dataclass
class Config:
    name: str = "digits_uncond"
    seed: int = field(default=0, metadata=_min(0))
    out: str | None = None
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
        if self.data.heldout_fraction >= 1.0:
            raise ConfigError("data.heldout_fraction: must be below 1")
        if self.curriculum.ema is not None and self.curriculum.ema >= 1.0:
            raise ConfigError("curriculum.ema: must be below 1 (or null for no smoothing)")
        if self.curriculum.budget_fraction is not None and self.curriculum.budget_fraction > 1.0:
            raise ConfigError("curriculum.budget_fraction: must be at most 1 (or null for no bound)")
        if self.train.ema_decay >= 1.0:
            raise ConfigError("train.ema_decay: must be below 1")
        if self.train.cond_drop_prob >= 1.0:
            raise ConfigError("train.cond_drop_prob: must be below 1")
        if self.curriculum.clusters > self.objective.timesteps and self.objective.name in ("eps", "v", "x0"):
            raise ConfigError(
                f"curriculum.clusters: {self.curriculum.clusters} clusters exceed the "
                f"{self.objective.timesteps} timesteps"
            )
        if self.curriculum.only_cluster is not None and self.curriculum.only_cluster >= self.curriculum.clusters:
            raise ConfigError(
                f"curriculum.only_cluster: {self.curriculum.only_cluster} is not a cluster index "
                f"(0..{self.curriculum.clusters - 1})"
            )
        if self.curriculum.pacing == "fixed" and self.curriculum.steps_per_stage is None:
            raise ConfigError("curriculum.steps_per_stage: required when curriculum.pacing is 'fixed'")
        if self.model.arch == "dit" and self.model.conditioning != "class":
            raise ConfigError("model.conditioning: the dit architecture needs 'class' conditioning")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a type hint; YAML already gives ints, floats, bools and strings."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0])
    if value is None:
        raise ConfigError(f"{key}: must not be null")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            value = _yaml11_float(value)  # PyYAML reads 3e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
        ):
            raise ConfigError(f"{key}: expected a mapping of names to numbers, got {value!r}")
        return {str(k): float(v) for k, v in value.items()}
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # pragma: no cover - schema bug


def _yaml11_float(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _check_field(key: str, value: Any, f: dataclasses.Field) -> None:
    meta = f.metadata
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(meta['choices'])}")
    if "min" in meta:
        low = meta["min"]
        if value < low or (meta["strict"] and value == low):
            relation = ">" if meta["strict"] else ">="
            raise ConfigError(f"{key}: must be {relation} {low:g}, got {value!r}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
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
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=1e-3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is not a section")
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
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {str(path)!r}: not valid YAML ({exc.__class__.__name__})") from None
        if loaded is not None:
            if not isinstance(loaded, dict):
                raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top level")
            tree = loaded
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    config = _build(Config, tree, "")
    config.check()
    return config


def dump_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML (every option, so a run can be repeated exactly), atomically:
    a kill mid-write must not leave a torn file that stops the run from being resumed."""
    write_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
