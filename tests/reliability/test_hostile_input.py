"""Hostile and careless input (issue 19), one test per numbered case: no code runs from a checkpoint,
no report changes silently, no user file is deleted, two writers never share a run, and every
failure is one line with exit code 2 (130 or 143 for a signal), never a traceback.

Most cases run ``cli.main`` in-process on the tiny run of ``TINY_ARGS``; three use a real process:
the second writer, and SIGTERM and SIGINT during a checkpoint write."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffusion_curriculum.cli import main

from ._run import TINY_ARGS, assert_same_run, cli_env, output, records, start, wait_until

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache(cache, monkeypatch):
    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(cache))


def _cli(capsys, *args) -> tuple[int, list[str]]:
    """Run the CLI in-process: its exit code and its stderr lines; never a traceback."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        code = int(exc.code)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.err.strip().splitlines()


def _refused(capsys, *args, needle: str, code: int = 2) -> str:
    """The command exits with ``code`` and one error line on stderr (besides progress bars) that holds
    ``needle``; returns the line."""
    got, lines = _cli(capsys, *args)
    assert got == code, (args, lines)
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1 and errors[0] == lines[-1], (args, lines)
    assert errors[0].startswith("diffusion-curriculum: error: ") and needle in errors[0], (args, needle, lines)
    return errors[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder but its lock (which only says who last wrote or tried to)."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"]
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def _copy(reference: Path, to: Path) -> Path:
    shutil.copytree(reference, to)
    (to / ".lock").unlink(missing_ok=True)
    return to


def _killed_after_step_5(reference: Path, to: Path) -> Path:
    """A copy of the tiny run as a kill after step 5 leaves it: newest checkpoint at step 4, no model."""
    _copy(reference, to)
    shutil.rmtree(to / "checkpoints" / "step_00000006")
    shutil.rmtree(to / "model")
    return to


# A grid of one tiny run, for the grid cases.
GRID = """\
name: tiny
base:
  data: {dataset: gmm}
  model: {arch: mlp, preset: tiny}
  curriculum: {n_clusters: 2}
  train: {max_steps: 4, batch_size: 8, sample_every: null}
methods: [none]
eval: {every: 2, n: 16, steps: 2}
seeds: [0, 1]
"""


# ----- 1. no code runs from a checkpoint ------------------------------------------------------------
class _Payload:
    """Pickles as a call to exec: whoever unpickles it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').write('the checkpoint ran code')"

    def __reduce__(self):
        return (exec, (self.code,))


def _state_of(path: Path) -> tuple[dict, dict]:
    """A checkpoint's state and rank-0 state, in whichever format it was written (this is our own file)."""
    if (path / "state.pt").is_file():
        return torch.load(path / "state.pt", weights_only=False), torch.load(path / "rank0.pt", weights_only=False)
    from diffusion_curriculum.runs import checkpoints as ckpt

    return ckpt.load_state(path), ckpt.load_rank_state(path, 0)


def _to_pickle_format(run: Path, marker: Path | None) -> None:
    """Rewrite every checkpoint of ``run`` in the earlier pickle format (state.pt, rank0.pt) with a
    consistent manifest, as whoever edits a shared run folder can; with ``marker``, state.pt carries
    a payload that writes it when unpickled."""
    for path in sorted((run / "checkpoints").glob("step_*")):
        state, rank = _state_of(path)
        if marker is not None:
            state["extra"] = _Payload(marker)
        for name in os.listdir(path):
            (path / name).unlink()
        torch.save(state, path / "state.pt")
        torch.save(rank, path / "rank0.pt")
        files = {n: hashlib.sha256((path / n).read_bytes()).hexdigest() for n in ("rank0.pt", "state.pt")}
        (path / "manifest.json").write_text(json.dumps({"step": int(path.name[5:]), "world_size": 1, "files": files}))


def test_1_a_poisoned_checkpoint_never_runs_its_code(tmp_path, tiny_reference, capsys):
    """sample, train --resume (latest and a path), evaluate --all-checkpoints and the converter all
    refuse it in one line naming it, and the payload never runs."""
    run = _copy(tiny_reference, tmp_path / "run")
    marker = tmp_path / "marker"
    _to_pickle_format(run, marker)
    newest = run / "checkpoints" / "step_00000006"
    samples = tmp_path / "samples.npz"
    commands = [
        ("sample", run, "--checkpoint", "latest", "--out", samples, "--n", "4", "--steps", "2"),
        ("sample", run, "--checkpoint", newest, "--out", samples, "--n", "4", "--steps", "2"),
        ("train", *TINY_ARGS, "--out", run, "--resume", "latest"),
        ("train", *TINY_ARGS, "--out", run, "--resume", newest),
        ("evaluate", run, "--all-checkpoints", "--n", "16", "--steps", "2"),
    ]
    for args in commands:
        code, lines = _cli(capsys, *args)
        assert not marker.exists(), f"`{args[0]}` ran code from the checkpoint"
        assert code == 2 and "step_0000000" in lines[-1] and "convert-checkpoint" in lines[-1], (args, lines)
    _refused(capsys, "convert-checkpoint", run, needle="--trust")
    assert not marker.exists(), "convert-checkpoint ran code from the checkpoint without --trust"
    assert not samples.exists()


def test_1_an_earlier_checkpoint_converts_and_the_run_resumes_exactly(tmp_path, tiny_reference, capsys):
    run = _killed_after_step_5(tiny_reference, tmp_path / "run")
    _to_pickle_format(run, None)
    _refused(capsys, "train", *TINY_ARGS, "--out", run, "--resume", "latest", needle="convert-checkpoint")
    code, _ = _cli(capsys, "convert-checkpoint", run)
    assert code == 0
    assert sorted(p.name for p in (run / "checkpoints" / "step_00000004").iterdir()) == [
        "manifest.json",
        "rank0.safetensors",
        "state.safetensors",
    ]
    code, lines = _cli(capsys, "train", *TINY_ARGS, "--out", run, "--resume", "latest")
    assert code == 0, lines
    assert_same_run(tiny_reference, run)


def test_1_a_checkpoint_holding_anything_but_data_is_refused(tmp_path, tiny_reference, capsys):
    """A state file whose JSON part names something the format does not describe is refused naming it."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    run = _copy(tiny_reference, tmp_path / "run")
    path = run / "checkpoints" / "step_00000006"
    file = path / "state.safetensors"
    with safe_open(str(file), "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tree = json.loads(metadata["state"])
    tree["extra"] = {"$object": "os.system", "args": ["touch pwned"]}
    save_file(tensors, str(file), {**metadata, "state": json.dumps(tree)})
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["state.safetensors"] = hashlib.sha256(file.read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    _refused(capsys, "sample", run, "--checkpoint", path, "--out", tmp_path / "s.npz", needle=str(file))


# ----- 2. one torn line never changes a report silently --------------------------------------------
def _report_module():
    spec = importlib.util.spec_from_file_location("report_tests", TESTS / "test_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_2_a_torn_last_line_is_reported_and_a_bad_middle_line_is_refused(tmp_path, capsys):
    from diffusion_curriculum.experiments.report import write_report
    from diffusion_curriculum.experiments.report.results import load_results

    fabricated = _report_module()
    fabricated._fabricate(tmp_path, fabricated.FID)
    evals = tmp_path / "runs" / "none-none-s0" / "eval.jsonl"
    text = evals.read_text()
    evals.write_text(text[: len(text) - 30])  # the last line cut short
    capsys.readouterr()
    grid = load_results(tmp_path)
    assert "eval.jsonl: ignored its last line (line 4" in capsys.readouterr().err
    run = next(r for r in grid.runs if r.name == "none-none-s0")
    assert run.final_step == 300 and len(run.repaired) == 1
    md, _ = write_report(tmp_path)
    assert "**Repaired:** run `none-none-s0`" in md.read_text()

    lines = text.splitlines(keepends=True)
    evals.write_text(lines[0] + lines[1][:40] + "\n" + "".join(lines[2:]))  # a damaged middle line
    with pytest.raises(ValueError, match=r"eval\.jsonl: line 2 is not a JSON record"):
        load_results(tmp_path)


def test_2_a_damaged_middle_line_of_the_log_stops_a_resume(tmp_path, tiny_reference, capsys):
    run = _killed_after_step_5(tiny_reference, tmp_path / "run")
    log = run / "metrics.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2]) + "{garbage\n" + "".join(lines[3:]))
    before = _snapshot(run)
    _refused(capsys, "train", *TINY_ARGS, "--out", run, "--resume", "latest", needle=f"{log}: line 3")
    assert _snapshot(run) == before


# ----- 3. two writers never share a folder; 6. SIGTERM mid-checkpoint -------------------------------
def test_3_a_second_writer_is_refused_and_sigterm_finishes_the_checkpoint(tmp_path, tiny_reference, cache, capsys):
    """While one `train` runs, a second one on its folder (fresh, --resume or --overwrite) and an
    `evaluate` exit 2 naming the first one's pid, and touch nothing. SIGTERM while the first writes a
    checkpoint lets the checkpoint finish, exits 143 with the resume hint, and the run resumes exactly."""
    out = tmp_path / "run"
    env = cli_env(cache, DIFFUSION_CURRICULUM_TEST_SAVE_DELAY="0.4")
    cmd = [sys.executable, "-m", "diffusion_curriculum.cli", "train", *TINY_ARGS, "--out", str(out)]
    first = start(cmd, env, tmp_path, tmp_path / "first.log")
    wait_until(lambda: (out / "config.yaml").exists(), first, "the first run's config", timeout=180, poll=0.02)
    for extra in ([], ["--resume", "latest"], ["--overwrite"], ["--seed", "1", "--overwrite"]):
        _refused(capsys, "train", *TINY_ARGS, "--out", out, *extra, needle=f"{out} is in use by pid {first.pid}")
    _refused(capsys, "evaluate", out, "--n", "16", needle=f"{out} is in use by pid {first.pid}")
    assert first.poll() is None, "the first run ended before the second writers were tried"

    staging = out / "checkpoints" / ".tmp_step_00000004"
    wait_until(lambda: staging.is_dir() and any(staging.iterdir()), first, "checkpoint 4 being written", poll=0.005)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 143, output(tmp_path / "first.log")
    text = output(tmp_path / "first.log")
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1] == "diffusion-curriculum: interrupted; resume with --resume latest"
    assert (out / "checkpoints" / "step_00000004" / "manifest.json").is_file()  # finished, then stopped
    assert not any(p.name.startswith(".tmp") for p in (out / "checkpoints").iterdir())
    assert [r["step"] for r in records(out)] == [1, 2, 3, 4]  # one writer's lines only

    code, lines = _cli(capsys, "train", *TINY_ARGS, "--out", out, "--resume", "latest")
    assert code == 0, lines
    assert_same_run(tiny_reference, out)


def test_3_a_lock_left_by_a_dead_process_is_stale_and_a_held_grid_or_study_folder_is_refused(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / ".lock").write_text(f"{dead.stdout.strip()} {socket.gethostname()}\n")
    code, lines = _cli(capsys, "train", *TINY_ARGS, "--out", stale)
    assert code == 0, lines

    held = tmp_path / "held"
    held.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(held / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            f"os.write(fd, b'%d {socket.gethostname()}\\n' % os.getpid())\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        grid = tmp_path / "grid.yaml"
        grid.write_text(GRID)
        _refused(capsys, "compare", "--config", grid, "--out", held, needle=f"{held} is in use by pid {holder.pid}")
        _refused(capsys, "study", "entropy", "--dataset", "gmm", "--out", held, needle=f"is in use by pid {holder.pid}")
        _refused(capsys, "train", *TINY_ARGS, "--out", held, needle=f"is in use by pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in held.iterdir()) == [".lock"]


# ----- 4. --resume PATH checks the checkpoint's own config ------------------------------------------
def test_4_resuming_from_another_runs_checkpoint_is_refused(tmp_path, tiny_reference, capsys):
    b = tmp_path / "b"
    code, _ = _cli(capsys, "train", *TINY_ARGS, "--out", b, "--seed", "1")
    assert code == 0
    before = _snapshot(b)
    source = tiny_reference / "checkpoints" / "step_00000004"
    line = _refused(capsys, "train", *TINY_ARGS, "--out", b, "--seed", "1", "--resume", source, needle="seed")
    assert str(source) in line
    assert _snapshot(b) == before


# ----- 5. --overwrite deletes only what runs and grids write; sample --out never overwrites ----------
def test_5_overwrite_refuses_a_folder_with_foreign_files_and_sample_keeps_existing_files(
    tmp_path, tiny_reference, capsys
):
    run = _copy(tiny_reference, tmp_path / "run")
    (run / "thesis.tex").write_text("three years of work")
    before = _snapshot(run)
    _refused(capsys, "train", *TINY_ARGS, "--out", run, "--overwrite", needle="thesis.tex")
    assert _snapshot(run) == before

    project = tmp_path / "myproject"
    project.mkdir()
    (project / "thesis.tex").write_text("three years of work")
    (project / "notes.txt").write_text("notes")
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    _refused(capsys, "compare", "--config", grid, "--out", project, "--overwrite", needle="notes.txt, thesis.tex")
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt", "thesis.tex"]

    existing = tmp_path / "existing.npz"
    existing.write_bytes(b"mine")
    args = ("sample", tiny_reference, "--out", existing, "--n", "4", "--steps", "2")
    _refused(capsys, *args, needle=f"--out {existing} exists; pass --overwrite")
    assert existing.read_bytes() == b"mine"
    code, _ = _cli(capsys, *args, "--overwrite")
    assert code == 0 and existing.read_bytes() != b"mine"


# ----- 6. one line instead of a traceback -------------------------------------------------------------
def _deep_yaml(path: Path) -> Path:
    path.write_text("seed: " + "[" * 20000 + "]" * 20000 + "\n")
    return path


def _lying_npy(path: Path) -> Path:
    import numpy as np

    np.save(path, np.zeros((4, 1, 8, 8), np.float32))
    path.write_bytes(path.read_bytes().replace(b"(4, 1, 8, 8)", b"(99999999, 1, 8, 8)"))
    return path


BIG = ["--set", "data.dim=100000", "--set", "data.n_samples=100"]  # vectors of 100,000 values, 100 of them
ONE_LINE_CASES = {
    "timeout-overflow": (["--set", "train.dist_timeout_s=1e308"], "train.dist_timeout_s: must be > 0 and <= 1000000"),
    "sigma-data-tiny": (["--objective", "edm", "--set", "objective.sigma_data=1e-300"], "objective.sigma_data: must"),
    "sigma-data-huge": (["--objective", "edm", "--set", "objective.sigma_data=1e300"], "objective.sigma_data: must"),
    "edm-clusters": (["--objective", "edm", "--clusters", "1000000000"], "curriculum.n_clusters: must be"),
    "batch-memory": ([*BIG, "--batch-size", "100000"], "train.batch_size: 100000 items of shape 100000 need"),
    "sample-memory": ([*BIG, "--set", "sample.n=1000000", "--set", "train.sample_every=1"], "sample.n: 1000000 items"),
    "dataset-memory": (["--set", "data.dim=100000", "--set", "data.n_samples=1000000000"], "data.n_samples"),
    "seed-overflow": (["--set", "seed=100000000000000000000000"], "seed: must be >= 0 and <= 4294967295"),
}


@pytest.mark.parametrize("case", sorted(ONE_LINE_CASES))
def test_6_bad_sizes_are_one_line_before_anything_is_written(tmp_path, capsys, case):
    args, needle = ONE_LINE_CASES[case]
    out = tmp_path / "run"
    _refused(capsys, "train", *TINY_ARGS, "--out", out, *args, needle=needle)
    assert not out.exists()


def test_6_bad_files_and_folders_are_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    _refused(capsys, "train", "--config", _deep_yaml(tmp_path / "deep.yaml"), "--out", out, needle="nested too deeply")
    bad = _lying_npy(tmp_path / "bad.npy")
    _refused(capsys, "train", *TINY_ARGS, "--dataset", bad, "--out", out, needle=f"{bad}: its header claims")
    assert not out.exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    _refused(capsys, "compare", "--config", grid, "--out", a_file, needle="is a file, not a folder")
    _refused(capsys, "study", "entropy", "--dataset", "gmm", "--out", a_file, needle="is a file, not a folder")
    assert a_file.read_text() == "not a folder"

    read_only = tmp_path / "read_only"
    mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if str(self).startswith(str(read_only)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    _refused(capsys, "train", *TINY_ARGS, "--out", read_only / "run", needle="Read-only file system")


def test_6_disk_full_during_a_checkpoint_is_one_line_and_the_run_resumes(tmp_path, tiny_reference, capsys, monkeypatch):
    from diffusion_curriculum.runs import checkpoints as ckpt

    out = tmp_path / "run"
    write = ckpt.write_atomic

    def full(path, data, **kwargs):
        if "step_00000004" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return write(path, data, **kwargs)

    monkeypatch.setattr(ckpt, "write_atomic", full)
    _refused(capsys, "train", *TINY_ARGS, "--out", out, needle="No space left on device")
    monkeypatch.setattr(ckpt, "write_atomic", write)
    ckpt.verify(out / "checkpoints" / "step_00000002")
    code, lines = _cli(capsys, "train", *TINY_ARGS, "--out", out, "--resume", "latest")
    assert code == 0, lines
    assert_same_run(tiny_reference, out)


def test_6_ctrl_c_during_a_checkpoint_write_finishes_it_and_exits_130(tmp_path, cache):
    out = tmp_path / "run"
    env = cli_env(cache, DIFFUSION_CURRICULUM_TEST_SAVE_DELAY="0.4")
    cmd = [sys.executable, "-m", "diffusion_curriculum.cli", "train", *TINY_ARGS, "--out", str(out)]
    proc = start(cmd, env, tmp_path, tmp_path / "log")
    staging = out / "checkpoints" / ".tmp_step_00000002"
    wait_until(lambda: staging.is_dir() and any(staging.iterdir()), proc, "checkpoint 2 being written", timeout=180)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    text = output(tmp_path / "log")
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1] == "diffusion-curriculum: interrupted; resume with --resume latest"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002"]


# ----- 7. a YAML alias bomb is refused at once ----------------------------------------------------------
def _alias_bomb() -> str:
    """A flow list whose 9 levels of aliases, 9 each, expand to 9**10 values (a few hundred bytes of YAML)."""
    levels = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "[" + ", ".join([*levels, "[" + ", ".join(["*a8"] * 9) + "]"]) + "]"


@pytest.mark.timeout(60)
def test_7_a_yaml_alias_bomb_is_refused_in_a_config_and_a_grid(tmp_path, capsys):
    config = tmp_path / "bomb.yaml"
    config.write_text(f"seed: {_alias_bomb()}\n")
    _refused(capsys, "train", "--config", config, "--out", tmp_path / "run", needle="expands to more than")
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.replace("eval: {every: 2,", f"eval: {{every: {_alias_bomb()},"))
    _refused(capsys, "compare", "--config", grid, "--out", tmp_path / "grid", needle="expands to more than")
    assert not (tmp_path / "run").exists() and not (tmp_path / "grid").exists()


# ----- 8. damaged grid state is named, and never answered with --overwrite ------------------------------
def test_8_a_damaged_done_marker_or_grid_file_is_named(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    out = tmp_path / "grid"
    run = out / "runs" / "none-none-s0"
    run.mkdir(parents=True)
    (out / "grid.yaml").write_text(GRID)
    done = run / "done.json"
    done.write_text('{"name": "none-none-s0", "sta')
    _refused(capsys, "compare", "--config", grid, "--out", out, needle=f"{done}: not a JSON")

    torn = GRID[: GRID.index("seeds: [0, 1]") + len("seeds: [0,")]
    (out / "grid.yaml").write_text(torn)
    line = _refused(capsys, "compare", "--config", grid, "--out", out, needle=f"{out / 'grid.yaml'}")
    assert "--overwrite" not in line
    assert done.is_file()


# ----- 9. run and grid names are single path components ---------------------------------------------
def test_9_names_cannot_escape_the_output_root(tmp_path, capsys, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    _refused(capsys, "train", *TINY_ARGS, "--set", "name=../../escaped_run", needle="name: '../../escaped_run'")
    grid = work / "grid.yaml"
    grid.write_text(GRID.replace("name: tiny", 'name: "../../escaped_grid"'))
    _refused(capsys, "compare", "--config", grid, needle="name: '../../escaped_grid'")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "grid.yaml"]


# ----- 10. smaller: YAML 1.1 numbers, overflowing seeds, a resume that would change the curriculum ------
def test_10_small_cases(tmp_path, capsys):
    code, lines = _cli(
        capsys, "info", "--weighting", "min_snr", "--set", "objective.weighting_params={gamma: 5e0}", "--clusters", "2"
    )
    assert code == 0, lines
    _refused(capsys, "train", *TINY_ARGS, "--set", "seed=1e23", needle="seed: expected an integer, got '1e23'")

    out = tmp_path / "linear"
    code, _ = _cli(capsys, "train", *TINY_ARGS, "--pacing", "linear", "--out", out)
    assert code == 0
    before = _snapshot(out)
    line = _refused(
        capsys,
        "train",
        *TINY_ARGS,
        "--pacing",
        "linear",
        "--max-steps",
        "12",
        "--out",
        out,
        "--resume",
        "latest",
        needle="train.max_steps is 12 here",
    )
    assert "curriculum.pacing_steps" in line
    assert _snapshot(out) == before


def test_config_errors_show_a_short_value(tmp_path, capsys):
    value = "[" + ", ".join(["1"] * 5000) + "]"
    line = _refused(capsys, "train", "--set", f"seed={value}", "--out", tmp_path / "run", needle="seed: expected an")
    assert len(line) < 200


def test_the_fault_cases_are_documented():
    text = (TESTS.parent / "docs" / "training.md").read_text()
    for phrase in ("convert-checkpoint", "is in use by pid", "--overwrite", "SIGTERM", "Torn logs"):
        assert phrase in text, phrase
