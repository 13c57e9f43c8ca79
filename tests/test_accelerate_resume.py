"""Samplers checkpointed through Accelerate, as the diffusers recipe does it, and gradient accumulation.

Accelerate's ``save_state`` writes a registered object's ``state_dict()`` from the main process only,
and every rank loads that one file (diffusers' scripts even call ``save_state`` on the main process
alone). Two gloo processes check that this restores every rank's timestep stream and statistics
exactly, for the paper's curriculum and for the learned samplers.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from diffusion_curriculum import (
    AdaptivePacing,
    CurriculumSampler,
    DiscreteSchedule,
    LearningProgressSampler,
    LossImportance,
    VarianceImportance,
    cluster_timesteps,
)
from diffusion_curriculum.errors import UserError

CLUSTERS = cluster_timesteps(DiscreteSchedule.linear(60), 4)
NAMES = ("curriculum", "learning_progress", "loss_importance", "variance_importance")
BEFORE, AFTER = 40, 30  # steps before the checkpoint, and compared after it
BATCH = 16


def _make(name: str, seed: int = 5):
    if name == "curriculum":
        return CurriculumSampler(CLUSTERS, AdaptivePacing(patience=2, ema=0.0), seed=seed)
    if name == "learning_progress":
        return LearningProgressSampler(CLUSTERS, total_steps=200, min_horizon=3, seed=seed)
    if name == "variance_importance":  # its world size from torch.distributed: 2 in the workers, else 1
        return VarianceImportance(CLUSTERS, history=2, seed=seed)
    return LossImportance(CLUSTERS, history=2, seed=seed)


def _losses(rank: int, step: int, t: torch.Tensor) -> torch.Tensor:
    """Scripted per-sample losses that differ between ranks and move over the steps."""
    u = t.to(torch.float64) / 60
    return (0.1 + u) * (1 + torch.exp(torch.tensor(-0.03 * step * (rank + 1)))) + 0.01 * ((step * 7 + t) % 5)


def _steps(samplers: dict, rank: int, steps: range) -> dict[str, list]:
    draws: dict[str, list] = {name: [] for name in samplers}
    for step in steps:
        for name, sampler in samplers.items():
            t = sampler.sample(BATCH)
            draws[name].append(t.tolist())
            sampler.observe(_losses(rank, step, t), t)
    return draws


def _summary(sampler) -> dict:
    stats = sampler.stats()
    return {key: stats[key] for key in ("step", "stage", "cluster_draws", "cluster_loss", "cluster_probs")}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        ACCELERATE_USE_CPU="true",
    )
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    try:
        samplers = {name: _make(name) for name in NAMES}
        for sampler in samplers.values():
            accelerator.register_for_checkpointing(sampler)
        _steps(samplers, rank, range(BEFORE))
        if accelerator.is_main_process:  # as diffusers' train_unconditional.py does
            accelerator.save_state(os.path.join(out, "checkpoint"))
        accelerator.wait_for_everyone()
        uninterrupted = _steps(samplers, rank, range(BEFORE, BEFORE + AFTER))
        expected = {name: _summary(s) for name, s in samplers.items()}

        fresh = {name: _make(name) for name in NAMES}
        again = Accelerator(cpu=True)
        for sampler in fresh.values():
            again.register_for_checkpointing(sampler)
        again.load_state(os.path.join(out, "checkpoint"))
        resumed = _steps(fresh, rank, range(BEFORE, BEFORE + AFTER))
        result = {
            "uninterrupted": uninterrupted,
            "resumed": resumed,
            "expected": expected,
            "got": {name: _summary(s) for name, s in fresh.items()},
            "stages": {name: s.stage for name, s in samplers.items()},
        }
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        accelerator.end_training()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_one_main_process_checkpoint_through_accelerate_resumes_every_rank_exactly(tmp_path, free_port):
    mp.spawn(_worker, args=(2, free_port, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert sorted(p.name for p in (tmp_path / "checkpoint").glob("custom_checkpoint_*")) == [
        f"custom_checkpoint_{i}.pkl" for i in range(len(NAMES))
    ]
    for name in NAMES:
        for rank, result in enumerate(ranks):
            assert result["resumed"][name] == result["uninterrupted"][name], (name, rank)
            assert result["got"][name] == result["expected"][name], (name, rank)  # statistics too
        # each rank drew its own timesteps, and both ended in the same state
        assert ranks[0]["uninterrupted"][name] != ranks[1]["uninterrupted"][name], name
        assert ranks[0]["expected"][name] == ranks[1]["expected"][name], name
    assert ranks[0]["stages"]["curriculum"] > 1  # the curriculum moved on before or after the save


def _accumulated_run(name: str, micro: int, steps: int) -> tuple[list, list]:
    """``steps`` optimizer steps of ``micro`` micro-batches each (observe with sync on the last);
    returns the per-step probabilities and the pooled (timesteps, losses) of every step."""
    sampler = _make(name)
    probs, pooled = [], []
    for step in range(steps):
        ts, ls = [], []
        for i in range(micro):
            t = sampler.sample(BATCH)
            loss = _losses(0, step, t)
            sampler.observe(loss, t, sync=i == micro - 1)
            ts.append(t)
            ls.append(loss)
        pooled.append((torch.cat(ts), torch.cat(ls)))
        probs.append((sampler.stats()["cluster_probs"], sampler.stage, list(sampler.transitions)))
    return probs, pooled


@pytest.mark.parametrize("name", NAMES)
def test_gradient_accumulation_steps_the_sampler_once_per_optimizer_step_as_one_batch(name):
    accumulated, pooled = _accumulated_run(name, micro=4, steps=60)
    one_batch = _make(name)
    for step, (t, loss) in enumerate(pooled):  # the same losses as one 4x batch per step
        one_batch.observe(loss, t)
        assert (one_batch.stats()["cluster_probs"], one_batch.stage, list(one_batch.transitions)) == accumulated[
            step
        ], step
    assert one_batch.step == 60
    if name == "curriculum":
        assert one_batch.stage > 1  # the comparison covered stage changes


def test_observe_under_accelerate_accumulate_counts_optimizer_steps():
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=4)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    sampler = _make("curriculum")
    for micro_batch in range(4 * 25):
        with accelerator.accumulate(model):
            t = sampler.sample(BATCH)
            loss = model(torch.ones(BATCH, 2)).squeeze(1) ** 2
            accelerator.backward(loss.mean())
            optimizer.step()
            optimizer.zero_grad()
        sampler.observe(_losses(0, micro_batch // 4, t), t, sync=accelerator.sync_gradients)
    assert sampler.step == 25
    assert sum(sampler.stats()["draw_counts"]) == 4 * 25 * BATCH


@pytest.mark.parametrize("name", NAMES)
def test_a_state_between_micro_batches_is_refused(name):
    sampler = _make(name)
    t = sampler.sample(BATCH)
    sampler.observe(_losses(0, 0, t), t, sync=False)
    with pytest.raises(UserError, match="between micro-batches"):
        sampler.state_dict()
    sampler.observe(_losses(0, 0, t), t, sync=True)
    assert sampler.state_dict()["step"] == 1


def test_a_multi_process_launch_that_started_one_process_is_recognised():
    from diffusion_curriculum.training.trainer import launched_as_one_process

    # accelerate launch --cpu --num_processes 2: MASTER_PORT set, one process, no WORLD_SIZE
    assert launched_as_one_process({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, world=1)
    assert not launched_as_one_process({"MASTER_PORT": "29500", "WORLD_SIZE": "2"}, world=2)  # torchrun
    assert not launched_as_one_process({"MASTER_PORT": "29500", "WORLD_SIZE": "1"}, world=1)  # asked for 1
    assert not launched_as_one_process({}, world=1)  # a plain run
