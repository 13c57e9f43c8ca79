"""Any of a run's own files cut at any byte: ``train --resume latest`` either ends exactly like the
uninterrupted run or stops with exit code 2 and one line that names the damaged file; it never
resumes to a different result. A kill can only tear the last line of a log, but a lost disk cache
or a careless copy can cut anything, so every file and every byte is fair game here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffusion_curriculum.cli import main

from ._run import TINY_ARGS, assert_same_run

# The run as a kill after step 5 leaves it: checkpoints 2 and 4, logs up to step 6 (cut back on resume).
FILES = [
    "metrics.jsonl",
    "probe.jsonl",
    "config.yaml",
    "checkpoints/step_00000004/state.safetensors",
    "checkpoints/step_00000004/rank0.safetensors",
    "checkpoints/step_00000004/manifest.json",
    "checkpoints/step_00000002/state.safetensors",
    "checkpoints/step_00000002/manifest.json",
]


def _killed_copy(reference: Path, out: Path) -> None:
    shutil.copytree(reference, out)
    shutil.rmtree(out / "checkpoints" / "step_00000006")
    shutil.rmtree(out / "model")


def _probes(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "probe.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def _cache(cache, monkeypatch):
    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(cache))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(FILES), cut=st.floats(0.0, 1.0))
def test_a_file_cut_at_any_byte_resumes_exactly_or_is_named(tmp_path_factory, tiny_reference, capsys, name, cut):
    out = tmp_path_factory.mktemp("cut") / "run"
    _killed_copy(tiny_reference, out)
    target = out / name
    data = target.read_bytes()
    keep = min(len(data) - 1, int(cut * len(data)))
    target.write_bytes(data[:keep])
    capsys.readouterr()
    code = main(["train", *TINY_ARGS, "--out", str(out), "--resume", "latest"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if code == 0:
        assert_same_run(tiny_reference, out)
        assert _probes(out) == _probes(tiny_reference)
    else:
        lines = captured.err.strip().splitlines()
        assert code == 2, captured.err
        assert lines[-1].startswith("diffusion-curriculum: error: ") and target.name in lines[-1], (name, keep, lines)
