"""Corrupt checkpoints are detected: a truncated or bit-flipped checkpoint file is reported in one
line and the newest intact checkpoint is used, so the resumed run still ends exactly like the
uninterrupted one."""

import shutil
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffusion_curriculum.runs import checkpoints as ckpt

from ._run import assert_same_run, cli_env, run, train_cmd


def _flip_bit(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 1 << bit
    path.write_bytes(bytes(data))


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[: keep % path.stat().st_size])


def test_corrupt_newest_checkpoints_are_reported_and_skipped_via_the_cli(tmp_path, cache, reference_run):
    """The reference run keeps checkpoints 15, 18, 21 and 24; a copy of it loses 24 (state.safetensors
    truncated), 21 (one bit of rank0.safetensors flipped) and 18 (manifest torn), resumes from 15 and ends at
    the same state, with each bad checkpoint named in one line."""
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    root = out / "checkpoints"
    state, rank0 = root / "step_00000024" / "state.safetensors", root / "step_00000021" / "rank0.safetensors"
    _truncate(state, state.stat().st_size // 2)
    _flip_bit(rank0, rank0.stat().st_size // 2, 3)
    _truncate(root / "step_00000018" / ckpt.MANIFEST, 10)
    shutil.rmtree(out / "model")

    proc = run(train_cmd(out, "--resume", "latest"), cli_env(cache), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    skipped = [line for line in lines if line.startswith("skipping corrupt checkpoint")]
    assert len(skipped) == 3, lines
    assert "step_00000024: state.safetensors fails its SHA-256 check" in skipped[0]
    assert "step_00000021: rank0.safetensors fails its SHA-256 check" in skipped[1]
    assert "step_00000018: missing or unreadable manifest.json" in skipped[2]
    assert f"resumed from {root / 'step_00000015'} at step 15" in lines
    assert_same_run(reference_run, out)
    assert [p.name for p in sorted(root.iterdir())] == [f"step_{s:08d}" for s in (15, 18, 21, 24)]


def _two_checkpoints(root: Path) -> None:
    """Two small published checkpoints, steps 1 and 2, of one rank."""
    for step in (1, 2):
        staging = ckpt.staging_dir(root, step)
        staging.mkdir(parents=True)
        ckpt.save_state({"step": step, "model": {"w": torch.arange(64.0) * step}}, staging / ckpt.STATE)
        ckpt.save_state({"sampler": {"stage": step}}, staging / ckpt.rank_file(0))
        ckpt.publish(root, step, world_size=1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["state.safetensors", "rank0.safetensors"]),
    truncate=st.booleans(),
    offset=st.integers(0, 10**6),
    bit=st.integers(0, 7),
)
def test_any_truncation_or_bit_flip_is_detected(tmp_path_factory, name, truncate, offset, bit):
    """Property: whichever byte of whichever file is damaged, the newest checkpoint is skipped with
    one message naming the file, and the previous one is chosen."""
    root = tmp_path_factory.mktemp("ckpt")
    _two_checkpoints(root)
    newest = root / "step_00000002" / name
    if truncate:
        _truncate(newest, offset)
    else:
        _flip_bit(newest, offset, bit)
    messages: list[str] = []
    assert ckpt.find_latest(root, warn=messages.append) == root / "step_00000001"
    assert len(messages) == 1 and name in messages[0] and "\n" not in messages[0]
