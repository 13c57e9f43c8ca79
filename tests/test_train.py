"""End-to-end training through the CLI with tiny budgets: every objective and conditioning,
exact resume, two processes, diffusers pipeline loading, and bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffusion_curriculum.cli import main
from diffusion_curriculum.runs.checkpoints import load_state

TINY = [
    "--max-steps",
    "6",
    "--batch-size",
    "8",
    "--clusters",
    "3",
    "--set",
    "train.checkpoint_every=3",
    "--set",
    "sample.n=4",
    "--set",
    "sample.steps=4",
]


def _train(out: Path, *extra: str) -> int:
    return main(["train", *TINY, "--out", str(out), *extra])


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def _text_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.parametrize("objective", ["eps", "v", "x0", "edm", "flow"])
def test_every_objective_trains_samples_and_saves(tmp_path, objective):
    out = tmp_path / objective
    assert _train(out, "--objective", objective, "--weighting", "min_snr", "--set", "train.sample_every=6") == 0
    records = _records(out)
    assert [r["step"] for r in records] == list(range(1, 7))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert (out / "samples" / "step_00000006.png").is_file()
    assert (out / "model" / "run.json").is_file()
    assert main(["sample", str(out), "--n", "4", "--steps", "3", "--out", str(tmp_path / "s.npz")]) == 0
    samples = __import__("numpy").load(tmp_path / "s.npz")["samples"]
    assert samples.shape == (4, 1, 8, 8)


@pytest.mark.parametrize(
    ("model", "conditioning"),
    [("unet", "class"), ("dit", "class"), ("unet", "text")],
)
def test_conditional_models_train_and_sample(tmp_path, model, conditioning):
    out = tmp_path / f"{model}_{conditioning}"
    assert _train(out, "--model", model, "--conditioning", conditioning, "--set", "sample.guidance_scale=2.0") == 0
    meta = json.loads((out / "model" / "run.json").read_text())
    assert meta["spec"]["conditioning"] == conditioning
    target = tmp_path / "grid.png"
    flag = ["--label", "7"] if conditioning == "class" else ["--prompt", "a handwritten seven"]
    assert main(["sample", str(out), "--n", "4", "--steps", "3", *flag, "--out", str(target)]) == 0
    assert target.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("dataset", ["toy2d", "gmm"])
def test_vector_data_trains_with_the_mlp(tmp_path, dataset):
    out = tmp_path / dataset
    assert (
        _train(
            out, "--dataset", dataset, "--model", "mlp", "--set", "data.n_samples=500", "--set", "train.sample_every=6"
        )
        == 0
    )
    assert (out / "samples" / "step_00000006.png").is_file()


def test_unconditional_run_loads_into_a_diffusers_pipeline(tmp_path):
    from diffusers import DDPMPipeline

    out = tmp_path / "run"
    assert _train(out) == 0
    pipeline = DDPMPipeline.from_pretrained(out / "pipeline")
    images = pipeline(
        batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    assert images.shape == (2, 8, 8, 1)


def _state(out: Path) -> dict:
    latest = sorted((out / "checkpoints").iterdir())[-1]
    return load_state(latest)


def test_interrupted_and_resumed_run_ends_with_identical_weights(tmp_path):
    """A curriculum crossing stage boundaries, stopped after step 5 with its newest checkpoint at
    step 3, resumes there and ends exactly where the uninterrupted run ends."""
    common = [
        "--max-steps",
        "10",
        "--pacing",
        "fixed",
        "--set",
        "curriculum.steps_per_stage=2",
        "--set",
        "train.checkpoint_every=3",
        "--set",
        "train.keep_checkpoints=5",
    ]
    full, broken = tmp_path / "full", tmp_path / "broken"
    assert main(["train", *common, "--out", str(full), "--batch-size", "8", "--clusters", "4"]) == 0
    stages = [r["stage"] for r in _records(full)]
    assert stages[0] == 1 and stages[-1] == 4  # crossed every stage boundary

    # The same run killed after step 5: its step-3 checkpoint is the newest that survives.
    partial = [*common[:1], "5", *common[2:]]
    assert main(["train", *partial, "--out", str(broken), "--batch-size", "8", "--clusters", "4"]) == 0
    shutil.rmtree(broken / "checkpoints" / "step_00000005")
    assert (
        main(["train", *common, "--out", str(broken), "--batch-size", "8", "--clusters", "4", "--resume", "latest"])
        == 0
    )

    a, b = _state(full), _state(broken)
    assert a["step"] == b["step"] == 10
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for x, y in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"], strict=True):
        assert torch.equal(x, y)
    strip = ("images_per_s",)
    ra = [{k: v for k, v in r.items() if k not in strip} for r in _records(full)]
    rb = [{k: v for k, v in r.items() if k not in strip} for r in _records(broken)]
    assert ra == rb  # no duplicated or missing log lines


@pytest.mark.slow
def test_two_process_cpu_run_logs_the_same_stage_on_every_rank(tmp_path, free_port):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port),
        "-m",
        "diffusion_curriculum.cli",
        "train",
        "--max-steps",
        "12",
        "--batch-size",
        "8",
        "--clusters",
        "4",
        "--pacing",
        "fixed",
        "--set",
        "curriculum.steps_per_stage=3",
        "--set",
        "train.checkpoint_every=6",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = _records(out)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert all(r["rank_stages"] == [r["stage"], r["stage"]] for r in records)
    assert {r["stage"] for r in records} == {1, 2, 3, 4}
    assert sorted(p.name for p in (out / "checkpoints" / "step_00000012").iterdir()) == [
        "manifest.json",
        "rank0.safetensors",
        "rank1.safetensors",
        "state.safetensors",
    ]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "diffusion_curriculum.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "train.lr_rate=1"], "train.lr_rate"),
        (["--set", "curriculum.patience=0"], "curriculum.patience"),
        (["--set", "train.batch_size=-3"], "train.batch_size"),
        (["--clusters", "5000"], "curriculum.n_clusters"),
        (["--dataset", "/no/such/folder"], "/no/such/folder"),
        (["--model", "resnet"], "--model"),
    ],
)
def test_bad_config_exits_2_naming_the_key_and_writes_nothing(tmp_path, args, needle):
    out = tmp_path / "run"
    proc = _cli("train", "--out", str(out), *args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
    assert not (out / "config.yaml").exists()


def test_bad_config_file_names_the_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  max_step: 10\n")
    proc = _cli("train", "--config", str(config), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "train.max_step" in proc.stderr


def test_a_run_folder_is_never_overwritten_by_accident(tmp_path):
    out = tmp_path / "run"
    assert _train(out) == 0
    before = (out / "metrics.jsonl").read_bytes()
    proc = _cli("train", *TINY, "--out", str(out))
    assert proc.returncode == 2 and "--resume" in proc.stderr
    assert (out / "metrics.jsonl").read_bytes() == before
    assert _train(out, "--overwrite") == 0


def test_info_prints_config_and_cluster_table(capsys):
    assert main(["info", "--clusters", "4", "--objective", "edm"]) == 0
    out = capsys.readouterr().out
    assert "curriculum:" in out and "sigma" in out
    assert "cluster 0 = least noise" in out and "cluster 3 = most noise" in out


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_gmm_stage_changes_come_from_patience_and_metrics_show_why(tmp_path):
    """configs/gmm.yaml for 600 steps with its defaults: the curriculum runs through its stages,
    at least 80% of the stage changes come from patience rather than the cap, and each line of
    metrics.jsonl lists the changes since the previous line and the signal that ended them."""
    out = tmp_path / "gmm"
    args = ["--max-steps", "600", "--set", "train.sample_every=null", "--set", "train.checkpoint_every=null"]
    assert main(["train", "--config", str(CONFIGS / "gmm.yaml"), *args, "--out", str(out)]) == 0
    records = _records(out)
    changes = [tuple(c) for r in records for c in r["stage_changes"]]
    assert len(changes) >= 6, changes
    causes = [cause for _, _, cause in changes]
    assert set(causes) <= {"patience", "cap"}
    assert causes.count("patience") >= 0.8 * len(causes), changes
    assert [stage for _, stage, _ in changes] == list(range(2, len(changes) + 2))
    patience = 20  # configs/gmm.yaml
    for r in records:
        # the stage trained at a step is 1 + the changes before it; a change is listed on its own step's line
        assert r["stage"] == 1 + sum(step < r["step"] for step, _, _ in changes)
        assert [tuple(c) for c in r["stage_changes"]] == [c for c in changes if c[0] == r["step"]]
        if r["stage"] < r["n_stages"]:
            assert set(r["pacing"]) == {"signal", "best", "counter"} and 0 <= r["pacing"]["counter"] <= patience
        if any(cause == "patience" for _, _, cause in r["stage_changes"]):
            assert r["pacing"]["counter"] == patience  # the view that ended the stage
    assert records[-1]["pacing"] is None or records[-1]["stage"] < records[-1]["n_stages"]


def test_resume_mid_stage_restores_adaptive_pacing_and_the_stage_change_log(tmp_path):
    """Adaptive pacing with metrics.jsonl lines every 2 steps, killed after step 7 and resumed from
    its step-3 checkpoint, at which a stage changed between two log lines: the same stage changes,
    causes, pacing signal, log lines and weights as the run that was never stopped."""
    common = [
        "--max-steps",
        "14",
        "--batch-size",
        "8",
        "--clusters",
        "4",
        "--set",
        "curriculum.patience=1",
        "--set",
        "curriculum.ema=0.5",
        "--set",
        "train.log_every=2",
        "--set",
        "train.checkpoint_every=3",
        "--set",
        "train.keep_checkpoints=5",
        "--set",
        "train.sample_every=null",
    ]
    full, broken = tmp_path / "full", tmp_path / "broken"
    assert main(["train", *common, "--out", str(full)]) == 0
    changes = [c for r in _records(full) for c in r["stage_changes"]]
    # what this test is about: a change at the checkpoint's step, which only the next log line reports
    assert [3, 2, "patience"] in changes and len(changes) >= 2, changes

    partial = [*common[:1], "7", *common[2:]]
    assert main(["train", *partial, "--out", str(broken)]) == 0
    for step in (6, 7):
        shutil.rmtree(broken / "checkpoints" / f"step_{step:08d}")
    assert main(["train", *common, "--out", str(broken), "--resume", "latest"]) == 0

    a, b = _state(full), _state(broken)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    strip = ("images_per_s",)
    ra = [{k: v for k, v in r.items() if k not in strip} for r in _records(full)]
    rb = [{k: v for k, v in r.items() if k not in strip} for r in _records(broken)]
    assert ra == rb
