"""Two CPU processes (gloo): identical stage decisions from different per-rank losses."""

import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from diffusion_curriculum import (
    AdaptivePacing,
    CurriculumSampler,
    DiscreteSchedule,
    cluster_timesteps,
)

STEPS = 60
BATCH = {0: 2, 1: 6}


def _losses(rank: int, step: int) -> torch.Tensor:
    """Rank 0 improves during steps 0-19, rank 1 during 20-39; both plateau from 40 on.

    Alone, rank 0 would advance from step 24 and rank 1 during 0-20; their mean only from 44.
    """
    start = 0 if rank == 0 else 20
    level = 5.0 - 0.1 * min(max(step - start, 0), 20)
    return torch.full((BATCH[rank],), level, dtype=torch.float64)


def _make():
    clusters = cluster_timesteps(DiscreteSchedule.linear(1000), 5)
    return CurriculumSampler(clusters, AdaptivePacing(4), "easy_to_hard", seed=7)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        sampler = _make()
        stages, draws = [], []
        for step in range(STEPS):
            t = sampler.sample(BATCH[rank])
            draws.append(t.tolist())
            sampler.observe(_losses(rank, step), t)
            stages.append(sampler.stage)
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump({"stages": stages, "draws": draws, "rank": sampler.rank}, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_take_identical_stage_decisions(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["stages"] == r1["stages"]

    # The decisions are those of one sampler fed the global (all-rank) mean loss ...
    reference = _make()
    expected = []
    for step in range(STEPS):
        both = torch.cat([_losses(0, step), _losses(1, step)])
        reference.observe(float(both.mean()))
        expected.append(reference.stage)
    assert r0["stages"] == expected
    # ... which neither rank's own losses would give.
    for rank in (0, 1):
        alone = _make()
        own = []
        for step in range(STEPS):
            alone.observe(_losses(rank, step))
            own.append(alone.stage)
        assert own != expected
    assert len(set(expected)) > 1

    # Each rank draws its own timesteps.
    assert r0["draws"][0] != r1["draws"][0][: BATCH[0]]
