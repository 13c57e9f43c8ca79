"""A timestep sampler in a training loop with the structure of diffusers' unconditional script.

This is our own loop, written with the skeleton of diffusers'
``examples/unconditional_image_generation/train_unconditional.py`` (``Accelerator`` with gradient
accumulation, ``prepare``, ``accumulate``, gradient clipping, an LR scheduler from
``diffusers.optimization``, ``EMAModel``, ``save_state`` every ``--checkpointing_steps`` and
``--resume_from_checkpoint latest``, both prediction types ``epsilon`` and ``sample``) and the same
option names, so that every line of the README's recipe is exercised where it would go in that
script. The lines of the recipe are marked ``# <-- recipe``:

1. the sampler is built once, after the noise scheduler, and registered for checkpointing (before
   ``load_state``), so that Accelerate saves and restores it with the model and optimizer;
2. ``timesteps = sampler.sample(bsz, device=...)`` replaces ``torch.randint(...)``;
3. the loss is kept per sample (``reduction="none"`` and a mean over the pixels, in both prediction
   branches), its mean is what is backpropagated, and ``sampler.observe(per_sample_loss, timesteps,
   sync=accelerator.sync_gradients)`` tells the sampler, which learns once per optimizer step.

Differences from the diffusers script, each on purpose: the data are scikit-learn's 8x8 digits and
the UNet is tiny (no download, a CPU is enough); ``--seed`` exists (the script has none): it seeds the
model and the data order; each micro-batch's noise comes from a generator seeded by (seed, process,
position in the data stream), so it needs no state to resume (the script draws it from the global
random state, which creating a data-loader iterator also draws from, so its noise after a resume
is not the uninterrupted run's; the sampler resumes exactly either way); ``save_state`` runs on
every process (the script calls it on the main process only); a checkpoint is written under a temporary name and
renamed when complete, so that ``latest`` never picks a half-written one after a kill; each epoch
sets the data order's epoch (``set_epoch``), so that a resume in a later epoch sees that epoch's
order; the EMA model is registered for checkpointing instead of saved by hooks.

``--log_draws`` writes each process's timesteps and per-sample losses of every micro-batch to
``draws_rank<r>.jsonl`` (a resumed run appends, after a ``{"resumed_from": step}`` line), which the
tests compare between an interrupted and an uninterrupted run.

Run (one process; the defaults: 10 epochs of 28 steps)::

    python examples/diffusers_unconditional.py
    python examples/diffusers_unconditional.py --sampler learning_progress
    python examples/diffusers_unconditional.py --order none           # the uniform baseline

Two CPU processes (``accelerate launch --cpu --num_processes 2`` starts one)::

    ACCELERATE_USE_CPU=true torchrun --standalone --nproc_per_node 2 examples/diffusers_unconditional.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from diffusion_curriculum import (
    ORDERS,
    SAMPLERS,
    AdaptivePacing,
    CurriculumSampler,
    DiscreteSchedule,
    shortest_adaptive_stage,
)
from diffusion_curriculum.samplers import draw_seed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The diffusers script's options this loop uses (same names and meanings), and the sampler's."""
    p = argparse.ArgumentParser(
        description="Train a tiny diffusers UNet2DModel on scikit-learn's digits with a timestep sampler "
        "in place of uniform timesteps, in a loop with the structure of diffusers' train_unconditional.py.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--output_dir", type=Path, default=Path("runs/diffusers_unconditional"))
    p.add_argument("--train_batch_size", type=int, default=64, help="images per process per micro-batch")
    p.add_argument("--num_epochs", type=int, default=10)
    p.add_argument("--max_train_steps", type=int, default=None,
                   help="optimizer steps; overrides --num_epochs (as in diffusers' other scripts)")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--lr_scheduler", default="cosine", help="a diffusers.optimization.get_scheduler name")
    p.add_argument("--lr_warmup_steps", type=int, default=50)
    p.add_argument("--use_ema", action="store_true", help="keep an EMA of the weights and sample from it")
    p.add_argument("--ema_max_decay", type=float, default=0.999)
    p.add_argument("--prediction_type", choices=("epsilon", "sample"), default="epsilon")
    p.add_argument("--ddpm_num_steps", type=int, default=1000)
    p.add_argument("--ddpm_beta_schedule", default="linear")
    p.add_argument("--checkpointing_steps", type=int, default=200)
    p.add_argument("--checkpoints_total_limit", type=int, default=2)
    p.add_argument("--resume_from_checkpoint", default=None, help='a checkpoint folder name, or "latest"')
    p.add_argument("--seed", type=int, default=0, help="model, data order, each process's noise and the sampler")
    p.add_argument("--num_samples", type=int, default=64, help="images in the final DDIM grid (0: none)")
    p.add_argument("--log_draws", action="store_true", help="write draws_rank<r>.jsonl (see the module doc)")
    p.add_argument("--sampler", choices=tuple(SAMPLERS), default="curriculum",
                   help="the paper's curriculum (with --order) or another timestep sampler")
    p.add_argument("--order", choices=ORDERS, default="easy_to_hard", help="curriculum order; none = uniform")
    p.add_argument("--n_clusters", type=int, default=5, help="timestep clusters (curriculum stages)")
    p.add_argument("--patience", type=int, default=10,
                   help="adaptive pacing: optimizer steps without a 2%% improvement of the smoothed loss")
    p.add_argument("--pacing_ema", type=float, default=0.9, help="adaptive pacing: EMA decay of the log-loss")
    p.add_argument("--cap_multiple", type=int, default=8,
                   help="a stage ends after this many times the shortest stage patience allows")
    p.add_argument("--shares", type=lambda text: [float(x) for x in text.split(",")],
                   help="matched_marginal: each cluster's share, comma-separated")
    return p.parse_args(argv)


def digit_images() -> torch.Tensor:
    """scikit-learn's 1797 digits as (N, 1, 8, 8) floats in [-1, 1] (raw values are 0..16)."""
    images = load_digits().images.astype(np.float32)
    return torch.from_numpy(images / 8.0 - 1.0).unsqueeze(1)


def tiny_unet(sample_size: int) -> UNet2DModel:
    """Two resolutions (8x8, 4x4), one ResNet block each, no attention."""
    return UNet2DModel(
        sample_size=sample_size, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    )


def build_sampler(args: argparse.Namespace, noise_scheduler: DDPMScheduler, max_train_steps: int):
    """The run's timestep sampler on the scheduler's own timesteps: the curriculum with adaptive pacing
    (its stages capped at a multiple of the shortest one patience allows), or another sampler."""
    schedule = DiscreteSchedule.from_alphas_cumprod(noise_scheduler.alphas_cumprod)
    if args.sampler == "curriculum":
        cap = args.cap_multiple * shortest_adaptive_stage(args.patience, args.pacing_ema)
        pacing = AdaptivePacing(patience=args.patience, ema=args.pacing_ema, max_steps_per_stage=cap)
        return CurriculumSampler.from_schedule(
            schedule, n_clusters=args.n_clusters, pacing=pacing, order=args.order, seed=args.seed
        )
    needs = {"learning_progress": {"total_steps": max_train_steps}, "matched_marginal": {"shares": args.shares}}
    return SAMPLERS[args.sampler].from_schedule(
        schedule, n_clusters=args.n_clusters, seed=args.seed, **needs.get(args.sampler, {})
    )


def checkpoints(output_dir: Path) -> list[str]:
    """Complete checkpoint folders, oldest first (a half-written one has a temporary name)."""
    names = [d.name for d in output_dir.iterdir() if d.is_dir() and d.name.startswith("checkpoint-")]
    return sorted(names, key=lambda name: int(name.split("-")[1]))


def save_checkpoint(accelerator: Accelerator, args: argparse.Namespace, global_step: int) -> None:
    """``save_state`` on every process into a temporary folder, renamed when complete; the oldest
    beyond ``--checkpoints_total_limit`` are removed (all of them folders this script wrote)."""
    staging = args.output_dir / f".tmp-checkpoint-{global_step}"
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)  # left by a run killed while saving
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.replace(staging, args.output_dir / f"checkpoint-{global_step}")
        for old in checkpoints(args.output_dir)[: -args.checkpoints_total_limit]:
            shutil.rmtree(args.output_dir / old)
    accelerator.wait_for_everyone()


def save_grid(images: np.ndarray, path: Path, scale: int = 4, pad: int = 1) -> None:
    """(N, H, W, 1) images in [0, 1] as one grayscale PNG grid, upscaled (nearest) for viewing."""
    n, h, w = images.shape[:3]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = images[
            i, :, :, 0
        ]
    img = Image.fromarray((grid.clip(0.0, 1.0) * 255).round().astype(np.uint8), mode="L")
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        project_config=ProjectConfiguration(project_dir=str(args.output_dir)),
        # the data order is a function of (seed, epoch) on every process
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    set_seed(args.seed)  # the model's initialisation: the same on every process
    if accelerator.is_main_process:
        args.output_dir.mkdir(parents=True, exist_ok=True)

    model = tiny_unet(sample_size=8)
    ema_model = EMAModel(model.parameters(), decay=args.ema_max_decay, use_ema_warmup=True,
                         model_cls=UNet2DModel, model_config=model.config) if args.use_ema else None
    noise_scheduler = DDPMScheduler(num_train_timesteps=args.ddpm_num_steps, beta_schedule=args.ddpm_beta_schedule,
                                    prediction_type=args.prediction_type)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    train_dataloader = DataLoader(TensorDataset(digit_images()), batch_size=args.train_batch_size, shuffle=True,
                                  drop_last=True)
    num_update_steps_per_epoch = math.ceil(
        len(train_dataloader) / accelerator.num_processes / args.gradient_accumulation_steps
    )
    max_train_steps = args.max_train_steps or args.num_epochs * num_update_steps_per_epoch
    num_epochs = math.ceil(max_train_steps / num_update_steps_per_epoch)

    sampler = build_sampler(args, noise_scheduler, max_train_steps)  # <-- recipe (1/3)
    accelerator.register_for_checkpointing(sampler)  # <-- recipe (1/3)
    if ema_model is not None:
        accelerator.register_for_checkpointing(ema_model)

    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * args.gradient_accumulation_steps,
        num_training_steps=max_train_steps * args.gradient_accumulation_steps,
    )
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, lr_scheduler
    )
    if ema_model is not None:
        ema_model.to(accelerator.device)
    noise_gen = torch.Generator(accelerator.device)
    accelerator.print(sampler)

    global_step = first_epoch = resume_step = 0
    if args.resume_from_checkpoint:
        found = checkpoints(args.output_dir) if args.output_dir.exists() else []
        if args.resume_from_checkpoint == "latest":
            path = found[-1] if found else None
        else:
            path = Path(args.resume_from_checkpoint).name
        if path is None:
            accelerator.print(f"Checkpoint '{args.resume_from_checkpoint}' does not exist. Starting a new run.")
            args.resume_from_checkpoint = None
        else:
            accelerator.print(f"Resuming from checkpoint {path}")
            accelerator.load_state(str(args.output_dir / path))
            global_step = int(path.split("-")[1])
            first_epoch = global_step // num_update_steps_per_epoch
            resume_step = global_step * args.gradient_accumulation_steps % (
                num_update_steps_per_epoch * args.gradient_accumulation_steps)
    draws_log = None
    if args.log_draws:
        draws_log = (args.output_dir / f"draws_rank{accelerator.process_index}.jsonl").open("a")
        if args.resume_from_checkpoint:
            draws_log.write(json.dumps({"resumed_from": global_step}) + "\n")

    progress_bar = tqdm(total=max_train_steps, initial=global_step, disable=not accelerator.is_local_main_process)
    for epoch in range(first_epoch, num_epochs):
        model.train()
        train_dataloader.set_epoch(epoch)
        for step, (clean_images,) in enumerate(train_dataloader):
            if args.resume_from_checkpoint and epoch == first_epoch and step < resume_step:
                continue  # skip the batches the checkpoint had already trained on
            # this micro-batch's noise, seeded by (seed, process, position in the data stream)
            noise_gen.manual_seed(draw_seed(args.seed, accelerator.process_index, epoch * len(train_dataloader) + step))
            noise = torch.randn(clean_images.shape, generator=noise_gen, device=clean_images.device)
            bsz = clean_images.shape[0]
            # diffusers: timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), ...).long()
            timesteps = sampler.sample(bsz, device=clean_images.device)  # <-- recipe (2/3)
            noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)

            with accelerator.accumulate(model):
                model_output = model(noisy_images, timesteps).sample
                if args.prediction_type == "epsilon":  # <-- recipe (3/3): the loss per sample
                    per_sample_loss = F.mse_loss(model_output.float(), noise.float(), reduction="none").mean(
                        dim=(1, 2, 3))
                else:  # "sample", with the script's SNR weights
                    alpha_t = noise_scheduler.alphas_cumprod.to(clean_images.device)[timesteps].view(-1, 1, 1, 1)
                    snr_weights = alpha_t / (1 - alpha_t)
                    per_sample_loss = (snr_weights * F.mse_loss(
                        model_output.float(), clean_images.float(), reduction="none")).mean(dim=(1, 2, 3))
                loss = (per_sample_loss * sampler.loss_weights(timesteps)).mean()  # ones for the curriculum
                accelerator.backward(loss)
                sampler.observe(per_sample_loss, timesteps, sync=accelerator.sync_gradients)  # <-- recipe (3/3)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()

            if draws_log is not None:
                draws_log.write(json.dumps({"step": global_step + 1, "timesteps": timesteps.tolist(),
                                            "losses": per_sample_loss.tolist()}) + "\n")
            if accelerator.sync_gradients:
                if ema_model is not None:
                    ema_model.step(model.parameters())
                progress_bar.update(1)
                global_step += 1
                if global_step % args.checkpointing_steps == 0:
                    save_checkpoint(accelerator, args, global_step)
                progress_bar.set_postfix(loss=f"{loss.item():.4f}", stage=f"{sampler.stage}/{sampler.n_stages}")
            if global_step >= max_train_steps:
                break
        if global_step >= max_train_steps:
            break
    progress_bar.close()
    if draws_log is not None:
        draws_log.close()
    accelerator.wait_for_everyone()

    stats = sampler.stats()
    accelerator.print(f"trained {global_step} optimizer steps; stage {stats['stage']}/{stats['n_stages']}, "
                      f"stage changes (step, stage, cause): {sampler.transitions}")
    if accelerator.is_main_process and args.num_samples > 0:
        unet = accelerator.unwrap_model(model)
        if ema_model is not None:
            ema_model.store(unet.parameters())
            ema_model.copy_to(unet.parameters())
        pipeline = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(noise_scheduler.config))
        pipeline.set_progress_bar_config(disable=True)
        with torch.no_grad():
            images = pipeline(batch_size=args.num_samples, generator=torch.Generator().manual_seed(0),
                              num_inference_steps=50, output_type="np").images
        if ema_model is not None:
            ema_model.restore(unet.parameters())
        save_grid(images, args.output_dir / "samples.png")
        accelerator.print(f"wrote {args.output_dir / 'samples.png'}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
