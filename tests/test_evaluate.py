"""`diffusion-curriculum evaluate` on tiny runs, and the FID ordering real < blurred < noise."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffusion_curriculum.cli import main
from diffusion_curriculum.data import load_dataset
from diffusion_curriculum.metrics.distribution import FeatureStats, frechet_distance
from diffusion_curriculum.metrics.evaluator import load_evaluator

TINY = [
    "--max-steps",
    "4",
    "--batch-size",
    "8",
    "--clusters",
    "2",
    "--set",
    "train.checkpoint_every=2",
    "--set",
    "train.keep_checkpoints=5",
    "--set",
    "train.sample_every=null",
]
EVAL = ["--n", "40", "--steps", "3"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("dataset", ["digits", "mnist5k"])
def test_fid_orders_real_blurred_noise(dataset):
    data = load_dataset(dataset)
    evaluator = load_evaluator(dataset)
    reference = FeatureStats.from_features(evaluator.features(data.train).double())
    real = data.heldout
    kernel = torch.ones(1, 1, 3, 3) / 9
    blurred = torch.nn.functional.conv2d(real, kernel, padding=1)
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fid = {
        name: frechet_distance(reference, FeatureStats.from_features(evaluator.features(x).double()))
        for name, x in (("real", real), ("blurred", blurred), ("noise", noise))
    }
    assert fid["real"] < fid["blurred"] < fid["noise"]
    assert fid["noise"] > 5 * fid["real"]


def test_downsampled_images_are_scored_pixel_replicated_with_their_own_reference():
    from diffusion_curriculum.config import load_config
    from diffusion_curriculum.evaluation import _Extractor, _reference_features

    small = load_dataset("digits", downsample=2)
    extractor = _Extractor("digits", None, torch.device("cpu"))
    replicated = small.heldout.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)  # 4x4 -> 8x8
    expected = load_evaluator("digits").features(replicated)
    torch.testing.assert_close(extractor(small.heldout)[0], expected)
    full_ref = _reference_features(load_config(), load_dataset("digits"), extractor)
    small_ref = _reference_features(load_config(overrides={"data.downsample": 2}), small, extractor)
    assert full_ref.shape == small_ref.shape and not torch.allclose(full_ref, small_ref)  # not the cached one


def _scipy_fid(a, b):
    """pytorch-fid's formula with scipy's sqrtm, float64: an independent check of the package's FID."""
    from scipy import linalg

    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def test_evaluate_final_model_writes_jsonl_and_plot(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), *EVAL]) == 0
    (record,) = _lines(run / "eval.jsonl")
    # The noise floor of the shipped classifier: two disjoint seed-0 halves of the training split (the reference).
    reference = load_evaluator("digits").features(load_dataset("digits").train)
    perm = torch.randperm(reference.shape[0], generator=torch.Generator().manual_seed(0))
    half = reference.shape[0] // 2
    floor = _scipy_fid(reference[perm[:half]], reference[perm[half : 2 * half]])
    assert record["fid_noise_floor"] == pytest.approx(floor, rel=1e-6)
    assert 0 < record["fid_noise_floor"] < record["fid"]
    assert f"noise floor {record['fid_noise_floor']:.4g}" in capsys.readouterr().out
    assert record["step"] == 4 and record["n"] == 40 and record["solver"] == "ddim"
    for key in ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage", "is_analogue"):
        assert isinstance(record[key], float), key
    assert record["extractor"].startswith("digits")
    losses = record["heldout_cluster_loss"]
    assert len(losses) == 2 and all(v > 0 for v in losses)
    assert (run / "eval.png").read_bytes()[:4] == b"\x89PNG"
    # fixed seed and sampler: evaluating again gives the same numbers
    assert main(["evaluate", str(run), *EVAL]) == 0
    assert _lines(run / "eval.jsonl")[0]["fid"] == record["fid"]


def test_evaluate_all_checkpoints_gives_a_curve_and_class_accuracy(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--conditioning", "class", "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "--all-checkpoints", *EVAL]) == 0
    records = _lines(run / "eval.jsonl")
    assert [r["step"] for r in records] == [2, 4]
    assert all(0.0 <= r["class_accuracy"] <= 1.0 for r in records)


def test_evaluate_gmm_has_exact_metrics(tmp_path):
    run = tmp_path / "gmm"
    assert (
        main(["train", *TINY, "--dataset", "gmm", "--model", "mlp", "--set", "data.n_samples=400", "--out", str(run)])
        == 0
    )
    assert main(["evaluate", str(run), *EVAL]) == 0
    (record,) = _lines(run / "eval.jsonl")
    assert record["nll"] > 0 and record["sliced_wasserstein"] > 0
    assert len(record["excess_error"]) == 2 and record["extractor"] == "exact"


def test_evaluate_image_folder_without_extractor_says_how_to_get_inception(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(12):
        pixels = (torch.rand(8, 8, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    run = tmp_path / "run"
    assert main(["train", *TINY, "--dataset", str(folder), "--out", str(run)]) == 0
    proc = subprocess.run(
        [sys.executable, "-m", "diffusion_curriculum.cli", "evaluate", str(run), *EVAL],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "inception" in proc.stderr.lower() and len(proc.stderr.strip().splitlines()) == 1
