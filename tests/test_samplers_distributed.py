"""Two CPU processes (gloo): the learned samplers hold identical state on every rank after each
``observe``, equal to one sampler fed both ranks' samples, while each rank draws its own timesteps."""

from __future__ import annotations

import json
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from diffusion_curriculum import DiscreteSchedule, LearningProgressSampler, LossImportance, cluster_timesteps

STEPS = 150
BATCH = {0: 24, 1: 40}  # unequal per-rank batches: the reductions must not assume equal sizes
CLUSTERS = cluster_timesteps(DiscreteSchedule.linear(60), 3)


def _make(name: str, rank: int | None = None):
    if name == "learning_progress":
        return LearningProgressSampler(CLUSTERS, total_steps=300, min_horizon=5, seed=7, rank=rank)
    return LossImportance(CLUSTERS, history=3, seed=7, rank=rank)


def _losses(rank: int, step: int, t: torch.Tensor) -> torch.Tensor:
    """Each rank sees its own loss curves (rank 1's low-noise losses fall faster), so that a rank that
    used only its own samples would decide differently."""
    u = t.to(torch.float64) / 60
    speed = torch.full_like(u, 0.02) if rank == 0 else 0.05 * (1 - u)
    return (0.1 + u) * (1 + torch.exp(-speed * step)) + 0.01 * ((step * 31 + t) % 7)


def _state(sampler) -> list[float]:
    return sampler.bin_probs().tolist()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = {}
        for name in ("learning_progress", "loss_importance"):
            sampler = _make(name)
            draws, states = [], []
            for step in range(STEPS):
                t = sampler.sample(BATCH[rank])
                draws.append(t.tolist())
                sampler.observe(_losses(rank, step, t), t)
                states.append(_state(sampler))
            result[name] = {"draws": draws, "states": states, "rank": sampler.rank}
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def test_learned_samplers_hold_identical_state_on_two_ranks(tmp_path, free_port):
    mp.spawn(_worker, args=(2, free_port, str(tmp_path)), nprocs=2, join=True)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    for name in ("learning_progress", "loss_importance"):
        a, b = r0[name], r1[name]
        assert (a["rank"], b["rank"]) == (0, 1)
        assert a["states"] == b["states"], name  # bit-identical on both ranks after every step
        assert len({tuple(s) for s in a["states"]}) > 10, name  # and the state did move
        # ... equal to one sampler fed both ranks' samples in rank order ...
        reference = _make(name, rank=0)
        expected = []
        for step in range(STEPS):
            t0, t1 = torch.tensor(a["draws"][step]), torch.tensor(b["draws"][step])
            reference.observe(torch.cat([_losses(0, step, t0), _losses(1, step, t1)]), torch.cat([t0, t1]))
            expected.append(_state(reference))
        assert all(
            torch.allclose(torch.tensor(x), torch.tensor(y), rtol=1e-12)
            for x, y in zip(expected, a["states"], strict=True)
        )
        # ... which rank 0's samples alone would not give
        alone = _make(name, rank=0)
        own = []
        for step in range(STEPS):
            t0 = torch.tensor(a["draws"][step])
            alone.observe(_losses(0, step, t0), t0)
            own.append(_state(alone))
        assert own != a["states"], name
        # each rank draws its own timesteps
        assert a["draws"] != [row[: BATCH[0]] for row in b["draws"]]
