"""The user's own data end to end (issue #21): the data checks of arrays in the usual wrong conventions, an
evaluator fitted on a labelled .npz and on an unlabelled image folder, evaluation with it, reference features
keyed by the data's content, an evaluator for other data refused, and ``compare`` on an .npz: refused before any
run folder without an evaluator, scored end to end with one. Tiny sizes throughout: seconds per test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from diffusion_curriculum.cli import main
from diffusion_curriculum.data import DataError, load_dataset
from diffusion_curriculum.errors import UserError
from diffusion_curriculum.metrics.fitted import fit_user_evaluator, load_fitted_evaluator

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
    "train.sample_every=null",
]
EVAL = ["--n", "24", "--steps", "2"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _bars(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n noisy 8x8 uint8 images of a vertical bar whose position is the class (3 classes)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 60, (n, 8, 8)).astype(np.int64)
    for i, y in enumerate(labels):
        images[i, :, 2 * y : 2 * y + 3] += 190
    return np.clip(images, 0, 255).astype(np.uint8), labels


@pytest.fixture
def bars_npz(tmp_path) -> Path:
    path = tmp_path / "bars.npz"
    images, labels = _bars()
    np.savez(path, images=images, labels=labels)
    return path


@pytest.fixture
def bars_evaluator(tmp_path, bars_npz) -> Path:
    out = tmp_path / "evaluator"
    fit_user_evaluator(str(bars_npz), out_dir=out, epochs=2, progress=False)
    return out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def _train_fails(tmp_path, dataset: Path, capsys) -> str:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--dataset", str(dataset), "--out", str(out)]) == 2
    assert not out.exists()
    return _one_error_line(capsys)


# ----- point 5: the data checks -------------------------------------------------------------------------------


def test_float_images_in_zero_one_are_refused_saying_which_convention(tmp_path, capsys):
    path = tmp_path / "unit.npz"
    np.savez(path, images=np.random.default_rng(0).random((10, 8, 8)).astype(np.float32))
    line = _train_fails(tmp_path, path, capsys)
    assert "[0, 1]" in line and "[-1, 1]" in line and "uint8 0..255" in line and "x * 2 - 1" in line, line


def test_a_stray_label_is_refused_naming_the_empty_classes(tmp_path, capsys):
    path = tmp_path / "stray.npz"
    images, _ = _bars(20)
    np.savez(path, images=images, labels=np.r_[np.arange(19) % 10, 100])
    line = _train_fails(tmp_path, path, capsys)
    assert "every class present" in line and "90 class(es) have no item" in line and "100" in line, line


def test_an_empty_class_is_refused(tmp_path):
    path = tmp_path / "gap.npz"
    images, _ = _bars(12)
    np.savez(path, images=images, labels=np.arange(12) % 3 * 2)  # 0, 2, 4: classes 1 and 3 are empty
    with pytest.raises(DataError, match=r"2 class\(es\) have no item \(1, 3\)"):
        load_dataset(str(path))


@pytest.mark.parametrize(
    "array",
    [np.zeros((0, 8, 8), np.float32), np.zeros((0, 1, 8, 8), np.uint8), np.zeros((0, 4), np.float64), np.zeros(0)],
    ids=["float-images", "uint8-images", "float-vectors", "float-1d"],
)
def test_empty_arrays_of_any_dtype_are_one_line_exit_2(tmp_path, capsys, array):
    path = tmp_path / "empty.npz"
    np.savez(path, images=array)
    line = _train_fails(tmp_path, path, capsys)
    assert "the array is empty" in line and str(path) in line, line


def test_the_skip_hint_is_in_command_line_syntax(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8), "L").save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"")
    line = _train_fails(tmp_path, folder, capsys)
    assert "--set data.on_bad_file=skip" in line, line


# ----- fitted evaluators --------------------------------------------------------------------------------------


def test_fit_on_a_labelled_npz_records_hash_resolution_accuracy_and_noise_floor(tmp_path, bars_npz, capsys):
    out = tmp_path / "ev"
    assert main(["fit-evaluator", "--dataset", str(bars_npz), "--out", str(out), "--epochs", "3"]) == 0
    assert "held-out accuracy" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "fitted" and manifest["labelled"] and manifest["n_classes"] == 3
    assert manifest["resolution"] == [1, 8, 8] and len(manifest["data_sha256"]) == 64
    assert 0.0 <= manifest["heldout_accuracy"] <= 1.0 and manifest["fid_noise_floor"] >= 0.0
    assert manifest["noise_floor_n"] == 30
    evaluator = load_fitted_evaluator(out)
    feats, logits = evaluator.features_and_logits(torch.zeros(5, 1, 8, 8))
    assert feats.shape == (5, 128) and logits.shape == (5, 3)
    # a second fit into the same folder is refused (nothing written is overwritten) unless asked for
    assert main(["fit-evaluator", "--dataset", str(bars_npz), "--out", str(out), "--epochs", "1"]) == 2
    assert "--overwrite" in _one_error_line(capsys)


def test_fit_on_an_unlabelled_image_folder_is_an_autoencoder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    images, _ = _bars(16)
    for i, image in enumerate(images):
        Image.fromarray(image, "L").save(folder / f"{i:02d}.png")
    manifest = fit_user_evaluator(str(folder), out_dir=tmp_path / "ev", epochs=2, progress=False)
    assert not manifest["labelled"] and manifest["n_classes"] == 0 and manifest["resolution"] == [1, 8, 8]
    assert manifest["heldout_reconstruction_mse"] > 0 and manifest["fid_noise_floor"] >= 0
    feats, logits = load_fitted_evaluator(tmp_path / "ev").features_and_logits(torch.zeros(3, 1, 8, 8))
    assert feats.shape == (3, 128) and logits is None


def test_evaluate_with_a_fitted_evaluator_then_data_overwritten_is_refused(tmp_path, bars_npz, bars_evaluator, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--dataset", str(bars_npz), "--conditioning", "class", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), *EVAL, "--evaluator", str(bars_evaluator)]) == 0
    summary = capsys.readouterr().out
    assert "fitted on this data" in summary and "noise floor" in summary, summary
    (record,) = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert record["extractor"].startswith("fitted-") and record["fid"] >= 0 and "class_accuracy" in record
    assert record["fid_noise_floor"] == json.loads((bars_evaluator / "manifest.json").read_text())["fid_noise_floor"]

    images, labels = _bars(seed=1)  # other images at the same path: the evaluator is for the old data
    np.savez(bars_npz, images=images, labels=labels)
    assert main(["evaluate", str(run), *EVAL, "--evaluator", str(bars_evaluator)]) == 2
    line = _one_error_line(capsys)
    assert "fitted on other data" in line and "fit-evaluator --dataset" in line, line


def test_an_evaluator_at_another_resolution_is_refused(bars_npz, bars_evaluator):
    evaluator = load_fitted_evaluator(bars_evaluator)
    evaluator.check_matches(str(bars_npz), (1, 8, 8))
    with pytest.raises(UserError, match=r"resolution 1x8x8 but the data is 1x4x4.*--downsample 2"):
        evaluator.check_matches(str(bars_npz), (1, 4, 4), downsample=2)


def test_reference_features_are_keyed_by_content_not_path(tmp_path, bars_npz):
    from diffusion_curriculum.assembly import build_dataset, cache_dir
    from diffusion_curriculum.config import load_config
    from diffusion_curriculum.evaluation import _reference_features

    class MeanPixels:
        identity = "mean-pixels"

        def __call__(self, images):
            return images.flatten(2).mean(2), None

    config = load_config(overrides={"data.dataset": str(bars_npz)})
    before = _reference_features(config, build_dataset(config), MeanPixels())
    np.savez(bars_npz, images=255 - _bars()[0], labels=_bars()[1])  # overwritten in place
    after = _reference_features(config, build_dataset(config), MeanPixels())
    assert not torch.allclose(before, after)
    assert torch.allclose(after, build_dataset(config).train.flatten(2).mean(2))
    assert len(list((cache_dir() / "reference").glob("*.pt"))) >= 2


# ----- compare on the user's .npz -----------------------------------------------------------------------------


def _grid(tmp_path: Path, data: Path, evaluator: Path | str | None) -> Path:
    grid = {
        "name": "mine",
        "base": {
            "data": {"dataset": str(data)},
            "model": {"arch": "unet", "preset": "tiny"},
            "curriculum": {"n_clusters": 2, "pacing": "fixed", "steps_per_stage": 2},
            "train": {"max_steps": 4, "batch_size": 8, "sample_every": None, "warmup_steps": 1},
        },
        "methods": ["none", "easy_to_hard"],
        "seeds": [0],
        "eval": {"every": 4, "n": 20, "steps": 2, "dense_every": 2, "dense_items": 16},
    }
    if evaluator is not None:
        grid["eval"]["evaluator"] = str(evaluator)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_compare_without_a_usable_evaluator_exits_2_before_any_run_folder(tmp_path, bars_npz, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--config", str(_grid(tmp_path, bars_npz, None)), "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert f"diffusion-curriculum fit-evaluator --dataset {bars_npz} --out DIR" in line and "eval.evaluator" in line
    assert not out.exists()
    other = tmp_path / "other.npz"
    images, labels = _bars(seed=2)
    np.savez(other, images=images, labels=labels)
    fit_user_evaluator(str(other), out_dir=tmp_path / "other_ev", epochs=1, progress=False)
    assert main(["compare", "--config", str(_grid(tmp_path, bars_npz, tmp_path / "other_ev")), "--out", str(out)]) == 2
    assert "fitted on other data" in _one_error_line(capsys)
    assert not out.exists()
    assert main(["compare", "--config", str(_grid(tmp_path, bars_npz, None)), "--out", str(out), "--inception-weights",
                 str(tmp_path / "nope.pth")]) == 2  # fmt: skip
    assert "no such file" in _one_error_line(capsys) and not out.exists()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("how", ["fitted-before", "auto"])
def test_compare_on_an_npz_with_a_fitted_evaluator_end_to_end(tmp_path, bars_npz, bars_evaluator, how):
    out = tmp_path / "cmp"
    evaluator = bars_evaluator if how == "fitted-before" else "auto"
    assert main(["compare", "--config", str(_grid(tmp_path, bars_npz, evaluator)), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "fitted-evaluator features" in md or "fitted on this data" in md
    assert "noise floor" in md
    grid = json.loads((out / "grid.json").read_text())
    assert grid["primary_metric"] == "fid"
    if how == "auto":
        assert (out / "evaluator" / "manifest.json").is_file() and "fitted by this grid" in md
        assert grid["eval"]["evaluator"] == "evaluator" and grid["eval"]["evaluator_fitted"]["labelled"]
    else:
        assert grid["eval"]["evaluator"] == str(bars_evaluator) and grid["eval"]["evaluator_fitted"] is None
    for run in grid["runs"]:
        records = [json.loads(line) for line in (out / run["dir"] / "eval.jsonl").read_text().splitlines()]
        assert records and all(r["extractor"].startswith("fitted-") and "fid" in r for r in records)
