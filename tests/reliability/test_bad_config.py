"""Bad configs and flags, and output-folder safety. Whatever is wrong (unknown keys, wrong types,
negative or zero sizes, patience 0, more clusters than timesteps, missing files, a run folder that
is a file or holds another run), ``train`` exits with code 2 and one line naming the key, flag or
file, without a traceback, and leaves an existing run folder byte for byte as it was.

Most examples run ``cli.main`` in-process; a handful of real subprocesses check the exit code and
the absence of a traceback end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffusion_curriculum.cli import main
from diffusion_curriculum.config import Config

from ._run import cli_env, run

TINY = ["--max-steps", "2", "--batch-size", "4", "--clusters", "2", "--set", "train.sample_every=null"]
# The same settings for faults given in a config file: flags would override the file's bad value.
TINY_TREE = {"train": {"max_steps": 2, "batch_size": 4, "sample_every": None}, "curriculum": {"n_clusters": 2}}
MODES = ([], ["--overwrite"], ["--resume", "latest"])
_LETTERS = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
_UPPER_BOUNDS = {  # cross-field rules: (bound, whether the bound itself is allowed)
    "data.heldout_fraction": (1.0, False),
    "curriculum.ema": (1.0, False),
    "curriculum.budget_fraction": (1.0, True),
    "train.ema_decay": (1.0, False),
    "train.cond_drop_prob": (1.0, False),
}


def _schema() -> dict[str, tuple[type, dataclasses.Field]]:
    """Every config key (``section.key`` or top-level) with its base type and field."""
    keys: dict[str, tuple[type, dataclasses.Field]] = {}

    def add(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                add(hint, f"{prefix}{f.name}.")
                continue
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            base = typing.get_origin(hint) or hint
            if args and base is not dict:
                base = typing.get_origin(args[0]) or args[0]
            keys[f"{prefix}{f.name}"] = (base, f)

    add(Config, "")
    return keys


SCHEMA = _schema()
SECTIONS = sorted({key.split(".")[0] for key in SCHEMA if "." in key})


@dataclasses.dataclass
class Fault:
    """One bad input: CLI arguments (after ``train``), the text its error must name, and whether
    the error comes before the run folder is looked at (so any --resume/--overwrite mode applies)."""

    args: list[str]
    needle: str
    any_mode: bool = True
    config: dict | bytes | None = None  # written to the config file, whose path is appended


def _wrong_value(base: type, field: dataclasses.Field) -> st.SearchStrategy:
    """Values of the wrong type for a key (never None: some keys accept it)."""
    lists = st.lists(st.integers(0, 3), min_size=1, max_size=2)
    if base is bool:
        return st.one_of(st.integers(-3, 3), _LETTERS)
    if base is int:
        return st.one_of(
            _LETTERS,
            st.floats(allow_nan=False).filter(lambda v: v != int(v) if math.isfinite(v) else 1),
            lists,
            st.booleans(),
        )
    if base is float:
        return st.one_of(_LETTERS, lists, st.booleans())
    if base is dict:
        return st.one_of(_LETTERS, st.dictionaries(_LETTERS, _LETTERS, min_size=1, max_size=2))
    choices = field.metadata.get("choices")
    if choices:
        return st.one_of(st.integers(), lists, _LETTERS.filter(lambda v: v not in choices))
    return st.one_of(st.integers(), lists)


def _out_of_range(key: str, base: type, field: dataclasses.Field) -> st.SearchStrategy:
    """Values below a key's minimum (zero and negative sizes, patience 0 ...) or above its upper bound."""
    options = []
    if "min" in field.metadata:
        low, strict = field.metadata["min"], field.metadata["strict"]
        if base is int:
            options.append(st.integers(low - 1000, low if strict else low - 1))
        else:
            floats = st.floats(low - 1e6, low, allow_nan=False)
            options.append(floats.filter(lambda v: v < low or (strict and v == low)))
    if key in _UPPER_BOUNDS:
        high, allowed = _UPPER_BOUNDS[key]
        options.append(st.floats(high, 1e6).filter(lambda v: v > high or not allowed))
    return st.one_of(options)


@st.composite
def config_faults(draw: st.DrawFn) -> Fault:
    """An unknown key, a wrong type, an out-of-range value or clusters > timesteps, given through
    --set, a config file or a dedicated flag."""
    kind = draw(st.sampled_from(["unknown", "type", "range", "clusters"]))
    if kind == "unknown":
        section = draw(st.sampled_from(["", *SECTIONS]))
        name = draw(_LETTERS.filter(lambda n: (f"{section}.{n}" if section else n) not in SCHEMA))
        key, value = (f"{section}.{name}" if section else name), 1
        tree_key = key
    elif kind == "clusters":
        timesteps = draw(st.integers(2, 60))
        clusters = draw(st.integers(timesteps + 1, timesteps + 200))
        objective = draw(st.sampled_from(["eps", "v", "x0"]))
        args = ["--clusters", str(clusters), "--set", f"objective.timesteps={timesteps}", "--objective", objective]
        return Fault(args, "curriculum.n_clusters")
    else:
        candidates = sorted(SCHEMA) if kind == "type" else sorted(k for k in SCHEMA if _out_of_range_ok(k))
        key = draw(st.sampled_from(candidates))
        base, field = SCHEMA[key]
        value = draw(_wrong_value(base, field) if kind == "type" else _out_of_range(key, base, field))
        tree_key = key
    if draw(st.booleans()):
        return Fault(["--set", f"{key}={json.dumps(value)}"], key)
    tree: dict = {}
    *parents, leaf = tree_key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return Fault([], key, config=tree)


def _out_of_range_ok(key: str) -> bool:
    return "min" in SCHEMA[key][1].metadata or key in _UPPER_BOUNDS


FLAGS = ["--max-steps", "--batch-size", "--clusters", "--patience"]


_PRESETS = ("tiny", "small", "base")  # valid values of --model alone


@st.composite
def flag_faults(draw: st.DrawFn) -> Fault:
    """Dedicated flags with zero, negative or non-numeric sizes, or a choice that does not exist."""
    kind = draw(st.sampled_from(["size", "choice", "seed"]))
    if kind == "size":
        flag = draw(st.sampled_from(FLAGS))
        value = draw(st.one_of(st.integers(-1000, 0).map(str), _LETTERS))
        return Fault([flag, value], flag)
    if kind == "seed":
        return Fault(["--seed", str(draw(st.integers(-1000, -1)))], "seed")
    flag = draw(st.sampled_from(["--objective", "--curriculum", "--pacing", "--weighting", "--model"]))
    return Fault(
        [flag, draw(_LETTERS.filter(lambda v: v not in ("eps", "v", "x", "none", "unet", "dit", "mlp", *_PRESETS)))],
        flag,
    )


@st.composite
def file_faults(draw: st.DrawFn) -> Fault:
    """Missing or unreadable files: config, data set, VAE, checkpoint; a run folder that is a file."""
    missing = f"/nonexistent/{draw(_LETTERS)}"
    kind = draw(st.sampled_from(["config", "dataset", "vae", "checkpoint", "garbled_config"]))
    if kind == "config":
        return Fault(["--config", f"{missing}.yaml"], f"{missing}.yaml")
    if kind == "garbled_config":  # not UTF-8, so never a valid YAML document
        return Fault([], "config file", config=b"\xff" + draw(st.binary(max_size=40)))
    if kind == "checkpoint":
        return Fault(["--resume", missing], missing, any_mode=False)
    flag = "--dataset" if kind == "dataset" else "--vae"
    mode = draw(st.sampled_from(MODES[1:]))  # past the folder check: the data must fail, not the folder
    return Fault([flag, missing, *mode], missing, any_mode=False)


@pytest.fixture(scope="module")
def occupied(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    """A finished two-step run, the folder every bad invocation points at."""
    out = tmp_path_factory.mktemp("occupied") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFUSION_CURRICULUM_CACHE", str(cache))
        assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def _merge(base: dict, bad: dict) -> dict:
    """``base`` with ``bad``'s keys laid over it, section by section."""
    merged = dict(base)
    for key, value in bad.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _exit_code(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse
        return int(exc.code)


def _check(fault: Fault, mode: list[str], out: Path, config_file: Path, capsys) -> None:
    """Run one bad invocation in-process and check exit code, message and the untouched folder."""
    before = _snapshot(out)
    mode = mode if fault.any_mode else []
    if isinstance(fault.config, bytes):
        config_file.write_bytes(fault.config)
        args = ["train", "--config", str(config_file), *TINY, "--out", str(out), *fault.args, *mode]
    elif fault.config is not None:  # everything in the file, so that no flag hides the bad value
        config_file.write_text(yaml.safe_dump(_merge({"out": str(out), **TINY_TREE}, fault.config)))
        args = ["train", "--config", str(config_file), *fault.args, *mode]
    else:
        args = ["train", *TINY, "--out", str(out), *fault.args, *mode]
    capsys.readouterr()
    code = _exit_code(args)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (args, captured.err)
    assert len(lines) == 1 and fault.needle in lines[0], (args, captured.err)
    assert "Traceback" not in captured.err + captured.out
    assert _snapshot(out) == before, f"{args} changed the run folder"


def _settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_settings(120)
@given(fault=config_faults(), mode=st.sampled_from(MODES))
def test_bad_config_values_and_files(fault, mode, occupied, tmp_path_factory, capsys):
    _check(fault, mode, occupied, tmp_path_factory.getbasetemp() / "bad.yaml", capsys)


@_settings(40)
@given(fault=flag_faults(), mode=st.sampled_from(MODES))
def test_bad_flags(fault, mode, occupied, tmp_path_factory, capsys):
    _check(fault, mode, occupied, tmp_path_factory.getbasetemp() / "bad.yaml", capsys)


@_settings(25)
@given(fault=file_faults(), mode=st.sampled_from(MODES))
def test_missing_and_unreadable_files(fault, mode, occupied, tmp_path_factory, capsys, cache, monkeypatch):
    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(cache))
    _check(fault, mode, occupied, tmp_path_factory.getbasetemp() / "bad.yaml", capsys)


def test_a_run_folder_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("precious")
    for out in (target, target / "run"):
        assert main(["train", *TINY, "--out", str(out)]) == 2
        line = capsys.readouterr().err.strip()
        assert "\n" not in line and f"{target} is a file, not a folder" in line
    assert target.read_text() == "precious"


def test_a_folder_holding_a_run_is_never_overwritten_by_accident(occupied, tmp_path, capsys):
    """Without --resume or --overwrite a folder that holds a run (or only its config, or only its
    checkpoints) is refused; --resume and --overwrite together are refused; --resume needs a run."""
    partial = {"config only": tmp_path / "a", "checkpoints only": tmp_path / "b"}
    partial["config only"].mkdir()
    (partial["config only"] / "config.yaml").write_bytes((occupied / "config.yaml").read_bytes())
    (partial["checkpoints only"] / "checkpoints").mkdir(parents=True)
    cases = [
        ([occupied], [], "already holds a run; pass --resume latest to continue it or --overwrite"),
        ([partial["config only"]], [], "already holds a run"),
        ([partial["checkpoints only"]], [], "already holds a run"),
        ([occupied], ["--resume", "latest", "--overwrite"], "--resume and --overwrite contradict each other"),
        ([tmp_path / "empty"], ["--resume", "latest"], "holds no run to resume"),
    ]
    for (out,), extra, needle in cases:
        before = _snapshot(out) if out.exists() else None
        assert main(["train", *TINY, "--out", str(out), *extra]) == 2
        line = capsys.readouterr().err.strip()
        assert "\n" not in line and needle in line, line
        assert (_snapshot(out) if out.exists() else None) == before


@pytest.mark.parametrize(
    ("args", "config", "needle"),
    [
        (["--overwrite"], "train:\n  max_step: 10\n", "train.max_step"),
        (["--batch-size", "0"], None, "--batch-size"),
        (["--clusters", "50", "--set", "objective.timesteps=10"], None, "curriculum.n_clusters"),
        (["--overwrite", "--dataset", "/nonexistent/images"], None, "/nonexistent/images"),
        (["--resume", "latest"], "\xff\xfe not text", "config file"),
    ],
    ids=["unknown-key-file", "zero-batch", "clusters-over-timesteps", "missing-data-overwrite", "binary-config"],
)
def test_bad_input_through_the_command_line(tmp_path, cache, occupied, args, config, needle):
    """Real processes: exit code 2, one line on stderr, no traceback, the run folder untouched."""
    before = _snapshot(occupied)
    if config is not None:
        path = tmp_path / "config.yaml"
        path.write_bytes(config.encode("latin-1"))
        args = [*args, "--config", str(path)]
    cmd = [sys.executable, "-m", "diffusion_curriculum.cli", "train", *TINY, "--out", str(occupied), *args]
    proc = run(cmd, cli_env(cache), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert _snapshot(occupied) == before
