"""Fixtures of the fault-injection suite: one torch thread in-process, a text-embedding cache per
session and the uninterrupted reference run the kill and corruption tests must reproduce exactly."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from diffusion_curriculum.cli import main

from ._run import TINY_ARGS, cli_env, run, train_cmd


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """In-process runs use one intra-op thread like the subprocesses: tiny models gain nothing from more,
    and on a busy machine extra threads only wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    """The curriculum run of ``RUN_ARGS``, uninterrupted, as a CLI subprocess."""
    root = tmp_path_factory.mktemp("reference")
    out = root / "run"
    proc = run(train_cmd(out), cli_env(cache), cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    """The run of ``TINY_ARGS``, uninterrupted, trained in-process (one thread)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DIFFUSION_CURRICULUM_CACHE", str(cache))
            assert main(["train", *TINY_ARGS, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    return out
