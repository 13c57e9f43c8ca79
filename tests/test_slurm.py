"""`--launcher slurm` (#20) without a cluster: the options and their one-line errors, and the launcher's bookkeeping
(submission, re-attaching to a running job, resubmitting an ended one, requeue on the preemption signal with an
exact resume) driven through submitit's LocalExecutor. The end-to-end test on a real Slurm is test_slurm_e2e.py."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

submitit = pytest.importorskip("submitit")
cloudpickle = pytest.importorskip("cloudpickle")

from diffusion_curriculum import cli, slurm  # noqa: E402
from diffusion_curriculum.errors import ConfigError, RunError  # noqa: E402
from diffusion_curriculum.experiments import load_grid, preset_path  # noqa: E402
from diffusion_curriculum.interrupts import deferred_signals  # noqa: E402
from diffusion_curriculum.jobs import mark_done  # noqa: E402
from diffusion_curriculum.slurm import SlurmOptions, SlurmRun, slurm_imap, torchrun_command  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the toy jobs below run in submitit's processes


# ----- options ------------------------------------------------------------------------------------------------
def test_options_from_the_grid_file_and_flags(tmp_path):
    grid = yaml.safe_load(preset_path("smoke").read_text())
    grid.update(
        launcher="slurm",
        slurm={"partition": "gpu", "time": 30, "gpus_per_run": 1, "mem_gb": 8, "sbatch": {"constraint": "a100"}},
    )
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    loaded = load_grid(path)
    assert loaded.launcher == "slurm"
    options = loaded.slurm.updated(key="", time=90, qos="high", sbatch={"exclusive": True})
    assert options == SlurmOptions("gpu", 90, 1, 1, 8, None, "high", {"constraint": "a100", "exclusive": True})
    params = options.executor_parameters("none-none-s0")
    assert params == {
        "job_name": "none-none-s0",
        "time": 90,
        "cpus_per_task": 1,
        "partition": "gpu",
        "gpus_per_node": 1,
        "mem": "8G",
        "qos": "high",
        "additional_parameters": {"constraint": "a100", "exclusive": True},
    }
    script = submitit.SlurmExecutor._make_submission_file_text  # submitit accepts them all
    executor = object.__new__(submitit.SlurmExecutor)
    executor.folder, executor.parameters = tmp_path, {}
    submitit.SlurmExecutor._internal_update_parameters(executor, **params)
    text = script(executor, "python job.py", "uid")
    assert "#SBATCH --partition=gpu" in text and "#SBATCH --constraint=a100" in text and "#SBATCH --exclusive" in text


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        ({"launcher": "cloud"}, "launcher"),
        ({"slurm": ["debug"]}, "slurm"),
        ({"slurm": {"partitions": "debug"}}, "slurm.partitions"),
        ({"slurm": {"time": 0}}, "slurm.time"),
        ({"slurm": {"gpus_per_run": -1}}, "slurm.gpus_per_run"),
        ({"slurm": {"mem_gb": "lots"}}, "slurm.mem_gb"),
        ({"slurm": {"sbatch": {"exclusive": False}}}, "slurm.sbatch"),
    ],
)
def test_bad_slurm_keys_name_the_key(tmp_path, edit, key):
    grid = {**yaml.safe_load(preset_path("smoke").read_text()), **edit}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(ConfigError, match=rf"^{key}[:.]"):
        load_grid(path)


def _main(capsys, *args) -> tuple[int, str]:
    code = cli.main(list(args))
    return code, capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "grid")
    code, err = _main(capsys, "compare", "--preset", "smoke", "--out", out, "--partition", "debug")
    assert code == 2 and err.strip().endswith("--partition: a Slurm option; add --launcher slurm"), err
    code, err = _main(capsys, "compare", "--preset", "smoke", "--out", out, "--launcher=slurm", "--gpus-per-run=-1")
    assert code == 2 and "--gpus-per-run: expected a number of GPUs" in err and len(err.splitlines()) == 1, err

    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    code, err = _main(capsys, "compare", "--preset", "smoke", "--out", out, "--launcher", "slurm")
    assert code == 2 and len(err.splitlines()) == 1 and "no sbatch on PATH" in err, err

    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm, "_slurm_command", lambda args: "debug*\ngpu\n")
    code, err = _main(capsys, "compare", "--preset", "smoke", "--out", out, "--launcher", "slurm", "--partition", "big")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "partition 'big' does not exist on this Slurm cluster (its partitions: debug, gpu)" in err
    assert not (tmp_path / "grid").exists(), "wrote something before refusing"

    code, err = _main(capsys, "compare", "--preset", "smoke", "--out", out, "--report-only")
    assert code == 2 and "holds no grid yet" in err and len(err.splitlines()) == 1, err


def test_a_missing_slurm_extra_says_which_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    code, err = _main(capsys, "compare", "--preset", "smoke", "--out", str(tmp_path / "g"), "--launcher", "slurm")
    assert code == 2, err
    assert err == (
        "diffusion-curriculum compare needs the [slurm] extra to submit runs to Slurm (no module named 'submitit'): "
        "pip install 'diffusion-curriculum[slurm]'\n"
    )


def test_multi_gpu_runs_train_under_torchrun(tmp_path):
    command = torchrun_command(tmp_path / "train.yaml", 4, resume=True)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    assert command[6:10] == ["diffusion_curriculum.cli", "train", "--config", str(tmp_path / "train.yaml")]
    assert command[10:] == ["--resume", "latest"]
    assert torchrun_command(tmp_path / "t.yaml", 2, resume=False)[-1] == "--overwrite"


# ----- the bookkeeping, with submitit's LocalExecutor -------------------------------------------------------------
def toy_job(job: tuple) -> dict:
    """A resumable toy run: ``steps`` steps of ``step_s`` seconds, each recorded in OUT/runs/NAME/steps.json (written
    as a checkpoint is: signals held), then done.json. A restart continues after the last recorded step."""
    out, name, steps, step_s = job
    run = Path(out) / "runs" / name
    done = run / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    run.mkdir(parents=True, exist_ok=True)
    state = run / "steps.json"
    done_steps = json.loads(state.read_text()) if state.is_file() else []
    with open(run / "starts.log", "a") as f:
        f.write(f"{os.getpid()}\n")
    for step in range(len(done_steps), steps):
        time.sleep(step_s)
        with deferred_signals():
            done_steps.append(step)
            state.write_text(json.dumps(done_steps))
    record = {"name": name, "steps": len(done_steps)}
    mark_done(done, record)
    return record


def _local_queue(out: Path):
    """The LocalExecutor's 'queue': the recorded jobs (process ids) still running."""

    def states() -> dict[str, str]:
        path = out / slurm.SLURM_DIR / "jobs.json"
        jobs = json.loads(path.read_text()) if path.is_file() else {}
        alive = {}
        for job in jobs.values():
            try:
                stat = Path(f"/proc/{job['job_id']}/stat").read_text()
            except OSError:
                continue
            if stat.rpartition(")")[2].split()[0] != "Z":
                alive[job["job_id"]] = "RUNNING"
        return alive

    return states


def _imap(out: Path, jobs: list[tuple], **kwargs):
    names = [job[1] for job in jobs]
    executor = submitit.LocalExecutor(folder=out / slurm.SLURM_DIR / "%j")
    executor.update_parameters(timeout_min=10)
    return slurm_imap(
        toy_job,
        jobs,
        names,
        out,
        SlurmOptions(),
        is_done=lambda name: (out / "runs" / name / "done.json").is_file(),
        executor=executor,
        queue_states=_local_queue(out),
        **kwargs,
    )


def _wait(condition, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.timeout(300)
def test_a_restarted_parent_reattaches_and_an_ended_job_is_submitted_again(tmp_path, monkeypatch):
    monkeypatch.setenv(slurm.POLL_ENV, "0.1")
    out = tmp_path / "grid"
    fast, slow = (str(out), "fast", 1, 0.0), (str(out), "slow", 400, 0.05)  # slow: 20 s unless stopped
    records = _imap(out, [fast, slow])
    assert next(records) == {"name": "fast", "steps": 1}
    records.close()  # the parent is killed: its jobs go on
    book = json.loads((out / "slurm" / "jobs.json").read_text())
    assert set(book) == {"fast", "slow"} and all(Path(j["log"]).name.endswith("_log.err") for j in book.values())
    slow_id = book["slow"]["job_id"]
    assert slow_id in _local_queue(out)()

    def kill(name: str) -> None:
        """The job dies mid-run (scancel, a lost node): its task process, then submitit's local controller."""
        _wait(lambda: (out / "runs" / name / "steps.json").is_file())
        os.kill(int((out / "runs" / name / "starts.log").read_text().split()[0]), signal.SIGKILL)
        os.kill(int(book[name]["job_id"]), signal.SIGKILL)

    class Board:
        """Sees each job's state; kills the slow job once the restarted parent has re-attached to it."""

        def __init__(self):
            self.seen = []

        def job_status(self, name, status, job_id):
            self.seen.append((name, status, job_id))
            if (name, status) == ("slow", "running"):
                assert json.loads((out / "slurm" / "jobs.json").read_text()) == book, "a job was submitted twice"
                kill(name)

    board = Board()
    records = _imap(out, [fast, slow], board=board)
    assert next(records) == {"name": "fast", "steps": 1}  # done: not submitted again
    with pytest.raises(RunError, match=rf"^run slow: Slurm job {slow_id} ended without finishing it .*its log: "):
        list(records)
    assert ("slow", "running", slow_id) in board.seen
    assert ("slow", "failed", slow_id) in board.seen
    assert not (out / "runs" / "slow" / "done.json").exists()
    before = len(json.loads((out / "runs" / "slow" / "steps.json").read_text()))

    quick = (str(out), "slow", 400, 0.0)  # the same run, resumed (its remaining steps without the wait)
    assert sorted(r["name"] for r in _imap(out, [fast, quick])) == ["fast", "slow"]
    assert json.loads((out / "slurm" / "jobs.json").read_text())["slow"]["job_id"] != slow_id
    assert json.loads((out / "runs" / "slow" / "steps.json").read_text()) == list(range(400))
    assert before > 0


@pytest.mark.timeout(300)
def test_the_preemption_signal_requeues_through_submitit_and_the_run_resumes_exactly(tmp_path):
    out = tmp_path / "grid"
    job = (str(out), "run", 200, 0.02)
    executor = submitit.LocalExecutor(folder=out / "slurm" / "%j")
    executor.update_parameters(timeout_min=10)
    submitted = executor.submit(SlurmRun(toy_job), job)
    state = out / "runs" / "run" / "steps.json"
    _wait(lambda: state.is_file() and len(json.loads(state.read_text() or "[]")) >= 5)
    starts = out / "runs" / "run" / "starts.log"
    first = int(starts.read_text().split()[0])
    os.kill(first, signal.SIGUSR2)  # what Slurm sends before the time limit (submitit's --signal=USR2@90)
    assert submitted.result() == {"name": "run", "steps": 200}
    assert len(starts.read_text().split()) == 2, "not requeued once"
    assert json.loads(state.read_text()) == list(range(200)), "steps lost or repeated"
    log = Path(submitted.paths.stderr).read_text()
    assert "preempted or near the time limit: requeued" in log and "Caught signal SIGUSR2" in log
