"""Bad data: an image folder with unreadable, empty and fake image files, mixed grayscale and RGBA
images and a non-image file; .npz arrays of the wrong shape or dtype. One clear line, exit code 2,
or with ``data.on_bad_file=skip`` a run that trains and reports what it skipped."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusion_curriculum.cli import main

from ._run import cli_env, run

TINY = ["--max-steps", "2", "--batch-size", "4", "--clusters", "2", "--set", "train.sample_every=null"]
BAD = ["broken.png", "empty.png", "fake.jpg"]


@pytest.fixture(autouse=True)
def _cache(cache, monkeypatch):
    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(cache))


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    """Eight readable 8x8 images (grayscale and RGBA) and three bad files, plus a text file."""
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(root / f"gray{i}.png")
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (8, 8, 4), dtype=np.uint8), "RGBA").save(root / f"rgba{i}.png")
    (root / "broken.png").write_bytes((root / "gray0.png").read_bytes()[:40])  # a truncated PNG
    (root / "empty.png").write_bytes(b"")
    (root / "fake.jpg").write_text("not a picture")
    (root / "notes.txt").write_text("not an image, and not named like one: ignored")
    return root


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_bad_files_stop_the_run_with_one_line_naming_them(tmp_path, messy_folder, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--dataset", str(messy_folder), "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert "3 unreadable image file(s)" in line and "on_bad_file" in line
    assert all(name in line for name in BAD), line
    assert "notes.txt" not in line
    assert not out.exists()


def test_skip_policy_trains_on_the_rest_and_reports_the_count(tmp_path, messy_folder, capsys):
    out = tmp_path / "run"
    args = ["train", *TINY, "--dataset", str(messy_folder), "--set", "data.on_bad_file=skip", "--out", str(out)]
    assert main(args) == 0
    reports = [line for line in capsys.readouterr().out.splitlines() if "skipped" in line]
    assert reports == [f"data.on_bad_file=skip: skipped 3 unreadable file(s): {', '.join(BAD)}"]
    meta = json.loads((out / "model" / "run.json").read_text())
    assert meta["spec"]["data_shape"] == [3, 8, 8]  # grayscale and RGBA together train as RGB


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        (np.zeros((10, 5, 8, 8), np.uint8), "channel count not in {1, 3}"),
        (np.zeros((10, 8), np.uint8), "got uint8 array of shape (10, 8)"),
        (np.zeros((10, 8, 8), np.int64), "got dtype int64"),
        (np.full((10, 1, 8, 8), 3.0, np.float32), "expected [-1, 1]"),
    ],
    ids=["channels", "uint8-vectors", "int64", "float-range"],
)
def test_wrong_npz_is_one_line_exit_2(tmp_path, capsys, array, needle):
    path = tmp_path / "data.npz"
    np.savez(path, images=array)
    assert main(["train", *TINY, "--dataset", str(path), "--out", str(tmp_path / "run")]) == 2
    line = _error_line(capsys)
    assert str(path) in line and needle in line, line
    assert not (tmp_path / "run").exists()


def test_wrong_npz_through_the_command_line_exits_2_without_a_traceback(tmp_path, cache):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((10, 8, 8, 8), np.float64))
    cmd = ["python", "-m", "diffusion_curriculum.cli", "train", *TINY, "--dataset", str(path), "--out", "run"]
    proc = run(cmd, cli_env(cache), cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "channel count" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()
