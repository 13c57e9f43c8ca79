"""Two CPU processes (gloo): identical stage decisions from different per-rank losses and draws."""

import json
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from diffusion_curriculum import (
    AdaptivePacing,
    CurriculumSampler,
    DiscreteSchedule,
    cluster_timesteps,
)

STEPS = 120
BATCH = {0: 3, 1: 7}  # stratified per rank: each rank's remainder is drawn from its own generator


def _losses(rank: int, step: int, t: torch.Tensor) -> torch.Tensor:
    """Rank 0 improves during steps 0-29, rank 1 during 30-59; both plateau from 60 on. The level
    depends on each sample's timestep, so the per-cluster sums (not just the mean) must be reduced."""
    start = 0 if rank == 0 else 30
    level = 5.0 * 0.95 ** min(max(step - start, 0), 30)
    return level * (1.0 + t.to(torch.float64) / 1000.0)


def _make(signal: str = "geomean"):
    clusters = cluster_timesteps(DiscreteSchedule.linear(1000), 5)
    return CurriculumSampler(clusters, AdaptivePacing(4, ema=0.5), "easy_to_hard", seed=7, signal=signal)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = {}
        for signal in ("geomean", "mean"):
            sampler = _make(signal)
            stages, draws = [], []
            for step in range(STEPS):
                t = sampler.sample(BATCH[rank])
                draws.append(t.tolist())
                sampler.observe(_losses(rank, step, t), t)
                stages.append(sampler.stage)
            result[signal] = {"stages": stages, "draws": draws, "transitions": sampler.transitions}
        result["rank"] = sampler.rank
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def test_two_ranks_take_identical_stage_decisions(tmp_path, free_port):
    mp.spawn(_worker, args=(2, free_port, str(tmp_path)), nprocs=2, join=True)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert (r0["rank"], r1["rank"]) == (0, 1)
    for signal in ("geomean", "mean"):
        a, b = r0[signal], r1[signal]
        assert a["stages"] == b["stages"] and a["transitions"] == b["transitions"], signal

        # The decisions are those of one sampler fed both ranks' samples (the global per-cluster sums) ...
        reference = _make(signal)
        expected = []
        for step in range(STEPS):
            t = torch.tensor(a["draws"][step] + b["draws"][step])
            loss = torch.cat([_losses(r, step, torch.tensor(d["draws"][step])) for r, d in ((0, a), (1, b))])
            reference.observe(loss, t)
            expected.append(reference.stage)
        assert a["stages"] == expected, signal
        assert len(set(expected)) > 2, signal
        # ... which neither rank's own samples would give.
        for rank, d in ((0, a), (1, b)):
            alone = _make(signal)
            own = []
            for step in range(STEPS):
                t = torch.tensor(d["draws"][step])
                alone.observe(_losses(rank, step, t), t)
                own.append(alone.stage)
            assert own != expected, (signal, rank)

        # Each rank draws its own timesteps, every batch stratified over the unlocked clusters.
        assert a["draws"] != [row[: BATCH[0]] for row in b["draws"]]
        assert all(len(row) == BATCH[0] for row in a["draws"]) and all(len(row) == BATCH[1] for row in b["draws"])
