"""What a newcomer meets in the first hour (issue #22): a light ``info``, one cluster numbering and one SNR in
``info`` and ``clusters``, an ``evaluate`` summary that names its FID's feature space, and a finished run that
says so when resumed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from diffusion_curriculum.cli import main
from diffusion_curriculum.schedules import DiscreteSchedule

GMM = ["--dataset", "gmm", "--model", "mlp", "--set", "data.n_samples=400", "--set", "train.sample_every=null"]
TINY = ["--max-steps", "4", "--batch-size", "8", "--clusters", "2"]

INFO_IMPORTS = """
import sys
from diffusion_curriculum.cli import main
assert main(["info", "--clusters", "4"]) == 0
heavy = ["diffusion_curriculum.training.trainer", "diffusers", "transformers", "accelerate"]
print("LOADED", [m for m in heavy if m in sys.modules])
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_info_does_not_import_the_training_loop():
    """``info`` prints a config and a cluster table: it must not pay for the trainer, diffusers or transformers."""
    proc = subprocess.run([sys.executable, "-c", INFO_IMPORTS], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOADED []" in proc.stdout, proc.stdout[-500:]
    assert "cluster 0 = least noise" in proc.stdout  # it did print the table


def _table(text: str) -> list[list[str]]:
    """The rows of a printed cluster table (after its header line)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["cluster", "range"])
    return [line.split() for line in lines[start + 1 :] if line.strip()]


def test_info_and_clusters_number_clusters_and_compute_snr_alike(capsys):
    assert main(["info", "--clusters", "5"]) == 0
    info = capsys.readouterr().out
    assert main(["clusters", "-n", "5"]) == 0
    clusters = capsys.readouterr().out
    numbering = "cluster 0 = least noise (hardest) ... cluster 4 = most noise (easiest)"
    assert numbering in info and numbering in clusters
    assert "C_" not in info + clusters
    rows_info, rows_clusters = _table(info), _table(clusters)
    assert [r[0] for r in rows_info] == ["0", "1", "2", "3", "4"]
    assert [r[:5] for r in rows_info] == [r[:5] for r in rows_clusters]  # index, range and SNR range: the same
    assert rows_info[0][1:3] == ["[0,", "200)"]  # cluster 0 holds the least noise
    # SNR at t = 0 of the schedule training uses (diffusers' float32 betas): 9997, in both
    assert rows_info[0][3] == rows_clusters[0][3] == "9997"


def test_info_says_which_cluster_a_curriculum_unlocks_first(capsys):
    assert main(["info", "--clusters", "4", "--curriculum", "easy_to_hard"]) == 0
    assert "first unlocked: cluster 3" in capsys.readouterr().out  # the noisiest, the easiest


def test_clusters_json_is_numbered_from_zero(capsys):
    assert main(["clusters", "-n", "3", "--json"]) == 0
    assert [r["cluster"] for r in json.loads(capsys.readouterr().out)] == [0, 1, 2]


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("T", [1, 10, 1000])
def test_ddpm_schedule_is_diffusers_bit_for_bit(beta_schedule, T):
    """The schedule ``info``, ``clusters`` and the trainer build without diffusers is diffusers' own."""
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule=beta_schedule).alphas_cumprod
    assert torch.equal(DiscreteSchedule.ddpm(beta_schedule, T).alphas_cumprod, ref.double())


def test_resuming_a_finished_run_says_so_and_does_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, *GMM, "--out", str(out)]) == 0
    capsys.readouterr()
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    exported = {p: p.stat().st_mtime_ns for p in (out / "model").rglob("*")}
    assert main(["train", *TINY, *GMM, "--out", str(out), "--resume", "latest"]) == 0
    captured = capsys.readouterr()
    assert f"{out} is already finished: trained to train.max_steps = 4" in captured.out + captured.err
    assert "train:" not in captured.err and "run written to" not in captured.out  # no bar replayed
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == files  # no change
    assert {p: p.stat().st_mtime_ns for p in (out / "model").rglob("*")} == exported  # not exported again
    # a higher budget resumes as before
    assert main(["train", *TINY[:1], "6", *TINY[2:], *GMM, "--out", str(out), "--resume", "latest"]) == 0
    assert "resumed from" in capsys.readouterr().out


def test_evaluate_prints_a_summary_naming_the_feature_space(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--model", "unet-tiny", "--set", "train.sample_every=null", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--n", "40", "--steps", "3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("step 4 (final model): 40 samples, ddim in 3 steps, seed 0")
    assert "FID " in text and "in the shipped digits classifier's features (digits-" in text
    assert "held-out denoising loss per cluster (cluster 0 = least noise" in text
    assert not any(line.startswith("{") for line in text.splitlines())
    assert main(["evaluate", str(run), "--n", "40", "--steps", "3", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["step"] == 4 and record["extractor"].startswith("digits-")
