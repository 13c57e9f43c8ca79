"""A curriculum over denoising tasks inside a diffusers-style training loop.

This follows the training loop of diffusers' ``examples/unconditional_image_generation/
train_unconditional.py`` and changes one thing: the uniform timestep draw

    timesteps = torch.randint(0, T, (bsz,), device=clean_images.device).long()

is replaced by a :class:`diffusion_curriculum.CurriculumSampler`, which draws timesteps from the
clusters unlocked so far and is told each step's per-sample loss, so that its adaptive pacing can
decide when to unlock the next cluster. Everything else (model, noise scheduler, loss, optimizer,
sampling) is plain diffusers and torch. Look for the three lines marked ``# <-- curriculum``.

``--sampler`` swaps in any other timestep sampler of :data:`diffusion_curriculum.SAMPLERS` through the
same three lines, e.g. ``--sampler learning_progress`` (ours: samples where the loss moves, uniform at
the end); samplers that weight the loss (importance sampling, SpeeD's weighting) give the weights in
``sampler.loss_weights(timesteps)``, which are ones for the curriculum.

The data are scikit-learn's 8x8 handwritten digits, scaled to [-1, 1], and the model is a tiny
``UNet2DModel``, so the defaults (600 steps) run in about 30 s on one CPU thread.
At the end 64 samples are drawn with DDIM (50 steps) and saved as a PNG grid.

Run::

    python examples/diffusers_unconditional.py                      # defaults: 600 steps
    python examples/diffusers_unconditional.py --steps 20 --patience 1 --ema 0 --cap-multiple 1  # smoke test
    python examples/diffusers_unconditional.py --order none          # uniform baseline
    python examples/diffusers_unconditional.py --sampler learning_progress   # our learning-progress sampler

Outputs in ``--out`` (default ``runs/diffusers_unconditional``): ``samples.png`` and
``log.jsonl`` with one ``{"step", "loss", "stage"}`` record per training step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler, UNet2DModel
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from diffusion_curriculum import (
    ORDERS,
    SAMPLERS,
    AdaptivePacing,
    CurriculumSampler,
    DiscreteSchedule,
    shortest_adaptive_stage,
)

try:
    from tqdm.auto import tqdm
except ImportError:  # tqdm is optional: fall back to a plain loop
    tqdm = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; every one has a default that reproduces the documented run."""
    p = argparse.ArgumentParser(
        description="Train a tiny diffusers UNet2DModel on sklearn digits with a denoising-task "
        "curriculum in place of uniform timestep sampling.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--steps", type=int, default=600, help="training steps (optimizer updates)")
    p.add_argument("--batch-size", type=int, default=64, help="images per training step")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--sampler", choices=tuple(SAMPLERS), default="curriculum",
                   help="timestep sampler: the paper's curriculum (with --order) or another, e.g. "
                   "learning_progress")
    p.add_argument("--order", choices=ORDERS, default="easy_to_hard",
                   help="curriculum order; 'none' is the uniform baseline")
    p.add_argument("--shares", type=lambda text: [float(x) for x in text.split(",")],
                   help="matched_marginal: the share of each cluster, comma-separated")
    p.add_argument("--n-clusters", type=int, default=5,
                   help="number of timestep clusters (= curriculum stages)")
    p.add_argument("--patience", type=int, default=10,
                   help="adaptive pacing: advance after this many steps without a 2%% improvement "
                   "of the smoothed loss")
    p.add_argument("--ema", type=float, default=0.9,
                   help="adaptive pacing: decay of the bias-corrected EMA of the log-loss (0: none)")
    p.add_argument("--cap-multiple", type=int, default=8,
                   help="a stage also ends after this many times the shortest stage patience allows, "
                   "1 / (1 - ema) + patience steps (the trainer's curriculum.cap_multiple)")
    p.add_argument("--seed", type=int, default=0, help="seed for init, data, noise and sampler")
    p.add_argument("--out", type=Path, default=Path("runs/diffusers_unconditional"),
                   help="output directory")
    p.add_argument("--num-samples", type=int, default=64, help="images in the sample grid")
    return p.parse_args(argv)


def load_digit_images() -> torch.Tensor:
    """sklearn's 1797 digits as a (N, 1, 8, 8) float tensor in [-1, 1] (raw values are 0..16)."""
    images = load_digits().images.astype(np.float32)
    return torch.from_numpy(images / 8.0 - 1.0).unsqueeze(1)


def make_model(sample_size: int) -> UNet2DModel:
    """A tiny UNet: two resolutions (8x8, 4x4), one ResNet block each, no attention."""
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )


def save_grid(images: np.ndarray, path: Path, scale: int = 4, pad: int = 1) -> None:
    """Write (N, H, W, 1) images in [0, 1] as one square-ish grayscale PNG, upscaled for viewing."""
    n, h, w = images.shape[:3]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = images[i, :, :, 0]
    img = Image.fromarray((grid.clip(0.0, 1.0) * 255).round().astype(np.uint8), mode="L")
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def main(argv: list[str] | None = None) -> None:
    """Train, log, sample, save."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # Every random draw has its own explicit, seeded generator.
    torch.manual_seed(args.seed)  # model initialisation
    data_gen = torch.Generator().manual_seed(args.seed + 1)  # batch order
    noise_gen = torch.Generator(device=device).manual_seed(args.seed + 2)  # training noise
    sample_gen = torch.Generator(device=device).manual_seed(args.seed + 3)  # DDIM sampling

    images = load_digit_images()
    loader = DataLoader(TensorDataset(images), batch_size=args.batch_size, shuffle=True,
                        drop_last=True, generator=data_gen)
    model = make_model(sample_size=images.shape[-1]).to(device)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000)  # epsilon prediction, linear betas
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

    # The curriculum: cluster the scheduler's own timesteps, pace adaptively on the loss. The cap
    # bounds a stage whose loss keeps falling; it is a multiple of the shortest stage patience
    # allows (a shorter one would be fixed pacing, which AdaptivePacing refuses).
    max_steps_per_stage = args.cap_multiple * shortest_adaptive_stage(args.patience, args.ema)
    schedule = DiscreteSchedule.from_alphas_cumprod(noise_scheduler.alphas_cumprod)
    if args.sampler == "curriculum":
        sampler = CurriculumSampler.from_schedule(  # <-- curriculum (1/3)
            schedule,
            n_clusters=args.n_clusters,
            pacing=AdaptivePacing(patience=args.patience, ema=args.ema,
                                  max_steps_per_stage=max_steps_per_stage),
            order=args.order,
            seed=args.seed,
        )
    else:  # the same protocol; learning_progress needs the run's length, matched_marginal its shares
        needs = {"learning_progress": {"total_steps": args.steps}, "matched_marginal": {"shares": args.shares}}
        sampler = SAMPLERS[args.sampler].from_schedule(  # <-- curriculum (1/3)
            schedule, n_clusters=args.n_clusters, seed=args.seed, **needs.get(args.sampler, {}))
    print(sampler)
    print(f"stage {sampler.stage}/{sampler.n_stages}: timesteps {sampler.unlocked_intervals}")

    log_path = args.out / "log.jsonl"
    bar = tqdm(total=args.steps, desc="train") if tqdm is not None else None
    echo = tqdm.write if tqdm is not None else print
    start = time.perf_counter()
    model.train()
    with log_path.open("w") as log:
        step = 0
        while step < args.steps:
            for (batch,) in loader:
                if step >= args.steps:
                    break
                clean_images = batch.to(device)
                bsz = clean_images.shape[0]
                noise = torch.randn(clean_images.shape, generator=noise_gen, device=device)

                # diffusers draws: timesteps = torch.randint(0, T, (bsz,), device=...).long()
                stage = sampler.stage
                timesteps = sampler.sample(bsz, device=clean_images.device)  # <-- curriculum (2/3)

                noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
                model_output = model(noisy_images, timesteps).sample
                per_sample_loss = F.mse_loss(
                    model_output.float(), noise.float(), reduction="none"
                ).mean(dim=(1, 2, 3))
                # ones for the curriculum and learning_progress; importance weights for loss_importance
                loss = (per_sample_loss * sampler.loss_weights(timesteps)).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

                # Per-sample losses and their timesteps: pacing watches the geometric mean of
                # the clusters' mean losses, stats() shows the mean loss per cluster.
                advanced = sampler.observe(per_sample_loss, timesteps)  # <-- curriculum (3/3)

                step += 1
                log.write(json.dumps({"step": step, "loss": loss.item(), "stage": stage}) + "\n")
                if advanced:
                    echo(f"step {step}: stage {sampler.stage}/{sampler.n_stages} "
                         f"({sampler.transitions[-1][2]}), timesteps {sampler.unlocked_intervals}")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.4f}",
                                    stage=f"{sampler.stage}/{sampler.n_stages}")
    if bar is not None:
        bar.close()
    train_s = time.perf_counter() - start

    stats = sampler.stats()
    print(f"trained {args.steps} steps in {train_s:.1f} s; final stage "
          f"{stats['stage']}/{stats['n_stages']} (finished={stats['finished']}), "
          f"transitions (step, stage, cause): {sampler.transitions}")
    print("mean loss per cluster (low noise -> high noise):",
          [None if np.isnan(v) else round(v, 4) for v in stats["cluster_loss"]])

    # Sample with DDIM (50 steps) from the same noise-schedule config.
    model.eval()
    pipeline = DDIMPipeline(unet=model, scheduler=DDIMScheduler.from_config(noise_scheduler.config))
    pipeline.set_progress_bar_config(disable=True)
    with torch.no_grad():
        samples = pipeline(batch_size=args.num_samples, generator=sample_gen,
                           num_inference_steps=50, output_type="np").images
    samples_path = args.out / "samples.png"
    save_grid(samples, samples_path)
    print(f"wrote {samples_path}")
    print(f"wrote {log_path}")


if __name__ == "__main__":
    main()
