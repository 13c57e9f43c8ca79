"""Shipped digit-classifier evaluators: integrity, held-out accuracy, features, metric sanity, a smoke fit."""

import hashlib
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from diffusion_curriculum.data import load_dataset
from diffusion_curriculum.metrics.evaluator import (
    EVALUATOR_DATASETS,
    WEIGHTS_DIR,
    class_accuracy,
    fit_evaluator,
    inception_score_analogue,
    load_evaluator,
)

MANIFEST = json.loads((WEIGHTS_DIR / "manifest.json").read_text())
RECORD_KEYS = {
    "file",
    "sha256",
    "heldout_accuracy",
    "n_train",
    "n_heldout",
    "epochs",
    "seed",
    "split_seed",
    "heldout_fraction",
    "feature_dim",
    "architecture",
    "torch_version",
    "num_threads",
}


@pytest.fixture(scope="module", params=EVALUATOR_DATASETS)
def case(request):
    """(dataset, shipped evaluator, the trainer's default split) for each evaluator data set."""
    name = request.param
    return name, load_evaluator(name), load_dataset(name, seed=0, heldout_fraction=0.1)


def _blur(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


@pytest.mark.parametrize("name", EVALUATOR_DATASETS)
def test_shipped_weights_match_manifest(name):
    record = MANIFEST[name]
    assert set(record) == RECORD_KEYS
    blob = (WEIGHTS_DIR / record["file"]).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == record["sha256"]
    assert len(blob) < 2 * 1024 * 1024
    assert record["feature_dim"] == 128 and record["seed"] == 0 and record["split_seed"] == 0


def test_heldout_accuracy_recomputed(case):
    name, evaluator, data = case
    accuracy = class_accuracy(evaluator.logits(data.heldout), data.heldout_labels)
    assert accuracy >= 0.97
    assert accuracy == pytest.approx(MANIFEST[name]["heldout_accuracy"], abs=1e-6)
    assert evaluator.heldout_accuracy == MANIFEST[name]["heldout_accuracy"]
    assert (MANIFEST[name]["n_train"], MANIFEST[name]["n_heldout"]) == (len(data.train), len(data.heldout))


def test_features_and_logits_shapes(case):
    name, evaluator, data = case
    x = data.heldout[:37]
    feats, logits = evaluator.features_and_logits(x, batch_size=10)
    assert feats.shape == (37, evaluator.model.feature_dim) == (37, 128) and logits.shape == (37, 10)
    assert feats.dtype == logits.dtype == torch.float32 and feats.device.type == "cpu"
    torch.testing.assert_close(evaluator.features(x), feats, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(evaluator.logits(x), logits, rtol=1e-4, atol=1e-5)
    assert evaluator.features(x[:0]).shape == (0, 128)
    assert evaluator.identity == f"{name}-{MANIFEST[name]['sha256'][:16]}"
    assert not evaluator.model.training and not any(p.requires_grad for p in evaluator.model.parameters())


def test_bad_images_rejected(case):
    _, evaluator, data = case
    size = data.heldout.shape[-1]
    with pytest.raises(ValueError, match="expects images"):
        evaluator.features(torch.zeros(2, 1, size + 1, size + 1))
    with pytest.raises(ValueError, match="NaN"):
        evaluator.features(torch.full((2, 1, size, size), float("nan")))
    with pytest.raises(ValueError, match="floating point"):
        evaluator.features(torch.zeros(2, 1, size, size, dtype=torch.uint8))


def test_real_images_beat_noise_and_blur(case):
    _, evaluator, data = case
    real = data.heldout
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores = {}
    for kind, images in (("real", real), ("noise", noise), ("blur", _blur(real))):
        logits = evaluator.logits(images)
        scores[kind] = class_accuracy(logits, data.heldout_labels), inception_score_analogue(logits, splits=5)[0]
    for worse in ("noise", "blur"):
        assert scores["real"][0] > scores[worse][0] + 0.1
        assert scores["real"][1] > scores[worse][1] + 1.0
    assert scores["real"][1] > 7.0


def test_inception_score_analogue_and_accuracy_known_values():
    assert inception_score_analogue(torch.zeros(40, 10), splits=4) == pytest.approx((1.0, 0.0))
    confident = torch.eye(10).repeat(4, 1) * 100.0  # every class equally often, each predicted with certainty
    mean, std = inception_score_analogue(confident, splits=1)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == 0.0
    labels = torch.arange(10).repeat(4)
    assert class_accuracy(confident, labels) == 1.0
    assert class_accuracy(confident, (labels + 1) % 10) == 0.0
    with pytest.raises(ValueError, match="splits"):
        inception_score_analogue(torch.zeros(3, 10), splits=4)
    with pytest.raises(ValueError, match="labels"):
        class_accuracy(confident, labels[:-1])


def test_tampered_or_missing_weights_rejected(tmp_path):
    shutil.copytree(WEIGHTS_DIR, tmp_path, dirs_exist_ok=True)
    path = tmp_path / MANIFEST["digits"]["file"]
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="SHA-256"):
        load_evaluator("digits", tmp_path)
    assert load_evaluator("mnist5k", tmp_path).sha256 == MANIFEST["mnist5k"]["sha256"]
    path.unlink()
    with pytest.raises(ValueError, match="missing"):
        load_evaluator("digits", tmp_path)
    with pytest.raises(ValueError, match="manifest"):
        load_evaluator("digits", tmp_path / "nowhere")


def test_unknown_dataset_rejected(tmp_path):
    with pytest.raises(ValueError, match="digits, mnist5k"):
        load_evaluator("cifar10")
    with pytest.raises(ValueError, match="digits, mnist5k"):
        fit_evaluator("toy2d", out_dir=tmp_path, progress=False)


def test_fit_smoke_writes_weights_and_manifest(tmp_path):
    shutil.copy(WEIGHTS_DIR / "manifest.json", tmp_path / "manifest.json")
    rng_before = torch.random.get_rng_state()
    record = fit_evaluator("digits", seed=3, epochs=1, n_train=128, out_dir=tmp_path, progress=False)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's random stream is untouched
    assert not torch.are_deterministic_algorithms_enabled()
    assert set(record) == RECORD_KEYS
    assert (record["n_train"], record["n_heldout"], record["epochs"], record["seed"]) == (128, 180, 1, 3)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["digits"] == record and manifest["mnist5k"] == MANIFEST["mnist5k"]
    assert hashlib.sha256((tmp_path / "digits.safetensors").read_bytes()).hexdigest() == record["sha256"]
    evaluator = load_evaluator("digits", tmp_path)
    assert evaluator.sha256 == record["sha256"] and evaluator.heldout_accuracy == record["heldout_accuracy"]
    again = fit_evaluator("digits", seed=3, epochs=1, n_train=128, out_dir=tmp_path / "again", progress=False)
    assert again["sha256"] == record["sha256"]  # same seed, same bytes (same torch, CPU type and thread count)
