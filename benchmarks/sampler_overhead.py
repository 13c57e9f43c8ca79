"""Per-step cost of the curriculum sampler next to one training step of a small UNet, on CPU.

Times ``sampler.sample(B)`` + ``sampler.observe(per_sample_loss, timesteps)`` (what a training
loop adds per step) and one forward + backward + optimizer step of a small diffusers
``UNet2DModel`` at the same batch size, each with ``time.perf_counter``, repeated; reports
medians and the sampler's time as a percentage of the model step.

The sampler is the realistic one: ``DiscreteSchedule.linear(1000)``, 20 uniform clusters,
``AdaptivePacing(patience=200, ema=0.99)``, order ``easy_to_hard``. Each repeat times a fresh
sampler from stage 1, fed precomputed random per-sample losses, so stage changes (and the table
rebuild they cause) happen inside the timed loop as they would in training.

Run::

    python benchmarks/sampler_overhead.py
    python benchmarks/sampler_overhead.py --out runs/sampler_overhead.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from diffusion_curriculum import AdaptivePacing, CurriculumSampler, DiscreteSchedule

MODEL_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
}
SAMPLER_CONFIG: dict[str, Any] = {
    "schedule": "DiscreteSchedule.linear(1000)",
    "n_clusters": 20,
    "pacing": "AdaptivePacing(patience=200, ema=0.99)",
    "order": "easy_to_hard",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description="Measure the per-step overhead of CurriculumSampler.sample + observe "
        "against one forward+backward+optimizer step of a small UNet2DModel on CPU.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--batch-size", type=int, default=64, help="batch size for both")
    p.add_argument("--sampler-iters", type=int, default=2000, help="sampler sample+observe iterations per timed repeat")
    p.add_argument("--model-steps", type=int, default=10, help="model steps per timed repeat")
    p.add_argument(
        "--warmup", type=int, default=3, help="untimed model steps first (sampler warm-up is 10x this, min 100)"
    )
    p.add_argument("--repeats", type=int, default=5, help="timed repeats; medians are reported")
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads for the run (default: torch's choice)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for init, inputs and the sampler")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here (default: print only)")
    return p.parse_args(argv)


def make_sampler(seed: int) -> CurriculumSampler:
    """The realistic sampler of :data:`SAMPLER_CONFIG`, at stage 1."""
    return CurriculumSampler.from_schedule(
        DiscreteSchedule.linear(1000),
        n_clusters=20,
        pacing=AdaptivePacing(patience=200, ema=0.99),
        order="easy_to_hard",
        seed=seed,
    )


def time_sampler(sampler: CurriculumSampler, losses: list[torch.Tensor], iters: int) -> float:
    """Seconds per ``sample`` + ``observe`` pair, averaged over ``iters`` calls."""
    batch_size = losses[0].numel()
    n_pool = len(losses)
    start = time.perf_counter()
    for i in range(iters):
        timesteps = sampler.sample(batch_size)
        sampler.observe(losses[i % n_pool], timesteps)
    return (time.perf_counter() - start) / iters


def time_model(
    model: UNet2DModel,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    t: torch.Tensor,
    target: torch.Tensor,
    steps: int,
) -> float:
    """Seconds per forward + MSE + backward + optimizer step, averaged over ``steps``."""
    start = time.perf_counter()
    for _ in range(steps):
        loss = F.mse_loss(model(x, t).sample, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a summary, optionally write JSON; returns the results."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    bsz = args.batch_size
    g = torch.Generator().manual_seed(args.seed)

    # Sampler inputs: a pool of per-sample losses, drawn before any timing.
    losses = list((torch.rand(256, bsz, generator=g) * 0.1 + 0.05).unbind(0))
    warm = make_sampler(args.seed)
    time_sampler(warm, losses, max(100, 10 * args.warmup))

    # Model inputs.
    torch.manual_seed(args.seed)
    model = UNet2DModel(**MODEL_CONFIG).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    size = MODEL_CONFIG["sample_size"]
    x = torch.randn(bsz, 1, size, size, generator=g)
    target = torch.randn(bsz, 1, size, size, generator=g)
    t = torch.randint(0, 1000, (bsz,), generator=g)
    time_model(model, optimizer, x, t, target, args.warmup)

    sampler_s: list[float] = []
    model_s: list[float] = []
    final_stages: list[int] = []
    for r in range(args.repeats):
        sampler = make_sampler(args.seed + 1 + r)
        sampler_s.append(time_sampler(sampler, losses, args.sampler_iters))
        final_stages.append(sampler.stage)
        model_s.append(time_model(model, optimizer, x, t, target, args.model_steps))

    sampler_med = statistics.median(sampler_s)
    model_med = statistics.median(model_s)
    ratio = 100.0 * sampler_med / model_med
    n_params = sum(p.numel() for p in model.parameters())
    results: dict[str, Any] = {
        "batch_size": bsz,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "model_config": {k: list(v) if isinstance(v, tuple) else v for k, v in MODEL_CONFIG.items()},
        "model_params": n_params,
        "sampler_config": SAMPLER_CONFIG,
        "sampler_iters": args.sampler_iters,
        "model_steps": args.model_steps,
        "repeats": args.repeats,
        "sampler_stage_after_each_repeat": final_stages,
        "sampler_s_per_step": sampler_s,
        "model_s_per_step": model_s,
        "sampler_s_per_step_median": sampler_med,
        "model_s_per_step_median": model_med,
        "overhead_percent": ratio,
    }

    print(f"model: UNet2DModel {results['model_config']} ({n_params / 1e6:.2f} M params)")
    print(f"sampler: {SAMPLER_CONFIG}")
    print(
        f"batch {bsz}, CPU, {results['torch_threads']} torch threads, "
        f"{args.repeats} repeats x ({args.sampler_iters} sampler iters, "
        f"{args.model_steps} model steps); stage after each repeat: {final_stages}"
    )
    print(f"sampler.sample + observe: {sampler_med * 1e6:9.1f} us/step (median)")
    print(f"model fwd+bwd+optim step: {model_med * 1e3:9.1f} ms/step (median)")
    print(f"overhead: {ratio:.4f} % of a model step (target < 0.5 %)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
