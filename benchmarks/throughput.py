"""Training and sampling throughput: our trainer against a loop written like diffusers' example.

For each model (U-Net ``tiny`` and ``small`` and DiT ``tiny`` on 28x28 mnist5k by default) this
builds our :class:`Trainer` in each requested variant and a reference loop written the way diffusers'
``examples/unconditional_image_generation/train_unconditional.py`` writes its inner loop (DataLoader
over the images, ``torch.randint`` timesteps, ``DDPMScheduler.add_noise``, ``F.mse_loss`` on the
epsilon prediction, ``accelerator.backward``, gradient clipping at 1.0, AdamW, LR scheduler, EMA as
with ``--use_ema``, ``loss.detach().item()`` for its log line), with the same model, batch, optimizer
settings and precision. The contenders are timed in turn, ``--steps`` steps each, for ``--reps``
rounds in one process (each round in a rotated order), so that a slow phase of a shared machine hits
them all; medians are reported.

It also measures the machine's fp32 matrix-multiply rate (a large ``torch.mm``), counts each model's
FLOPs per training step (forward + backward) with ``torch.utils.flop_counter`` and reports the
achieved rate as a fraction of it; and DDIM sampling throughput (50 steps) of our ``generate``
against diffusers' ``DDIMPipeline`` on the same U-Net.

Run::

    python benchmarks/throughput.py                        # the tables in docs/performance.md
    python benchmarks/throughput.py --models unet-tiny --reps 2 --steps 5
    python benchmarks/throughput.py --batch-size 256       # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from diffusion_curriculum.config import load_config
from diffusion_curriculum.generation import generate
from diffusion_curriculum.training.trainer import Trainer

VARIANTS = {  # our trainer's performance options, by name
    "default": {},
    "channels_last": {"train.channels_last": True},
    "for_loop_adamw": {"train.fused_adamw": False},
    "compile": {"train.compile": True},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="unet-tiny,unet-small,dit-tiny", help="ARCH-PRESET list")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per contender per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per contender before the rounds")
    p.add_argument("--reps", type=int, default=3, help="rounds")
    p.add_argument("--variants", default="default,for_loop_adamw,channels_last", help=f"of {', '.join(VARIANTS)}")
    p.add_argument("--sample-n", type=int, default=64, help="images per DDIM sampling timing (0: skip)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    return p.parse_args(argv)


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, n: int | None = None, reps: int = 10) -> float:
    """fp32 FLOP/s of an n x n by n x n ``torch.mm`` (2 n^3 FLOPs), best of ``reps``."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


class Reference:
    """The inner loop of diffusers' train_unconditional.py, on our model's diffusers network."""

    def __init__(self, trainer: Trainer) -> None:
        cfg = trainer.config.train
        self.acc = trainer.accelerator
        self.device = trainer.device
        self.net = copy.deepcopy(trainer._unwrapped.inner).to(self.device)
        self.class_cond = trainer.spec.arch == "dit"
        self.labels = trainer.conditions.ids
        self.n_classes = trainer.spec.null_class
        data = TensorDataset(trainer.train_x.cpu(), torch.arange(trainer.train_x.shape[0]))
        self.loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True, num_workers=0)
        self.batches = iter(self.loader)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.lr_scheduler = get_scheduler(
            "cosine", self.optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=10**6
        )
        self.net, self.optimizer = self.acc.prepare(self.net, self.optimizer)
        self.ema = EMAModel(self.acc.unwrap_model(self.net).parameters(), decay=cfg.ema_decay)
        self.ema.to(self.device)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def train_step(self) -> float:
        images, idx = self._batch()
        clean = images.to(self.device)
        noise = torch.randn(clean.shape, device=clean.device)
        timesteps = torch.randint(0, 1000, (clean.shape[0],), device=clean.device).long()
        noisy = self.scheduler.add_noise(clean, noise, timesteps)
        with self.acc.autocast():
            if self.class_cond:
                labels = self.labels[idx.to(self.labels.device)].to(self.device)
                out = self.net(noisy, timesteps, class_labels=labels).sample
            else:
                out = self.net(noisy, timesteps).sample
        loss = F.mse_loss(out.float(), noise.float())
        self.acc.backward(loss)
        self.acc.clip_grad_norm_(self.net.parameters(), 1.0)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad()
        self.ema.step(self.acc.unwrap_model(self.net).parameters())
        return loss.detach().item()


def _trainer(model: str, variant: str, args: argparse.Namespace, out: Path) -> Trainer:
    arch, preset = model.split("-")
    overrides = {
        "data.dataset": args.dataset,
        "model.arch": arch,
        "model.preset": preset,
        "model.conditioning": "class" if arch == "dit" else "none",
        "train.batch_size": args.batch_size,
        "train.sample_every": None,
        "train.checkpoint_every": None,
        "out": str(out / f"{model}_{variant}"),
        **VARIANTS[variant],
    }
    return Trainer(load_config(overrides=overrides), progress=False)


def _time(step, n: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(n):
        step()
    _sync(device)
    return time.perf_counter() - start


def step_flops(trainer: Trainer) -> int:
    """FLOPs of one forward + backward of the network at the trainer's batch size."""
    net = trainer._unwrapped
    x0 = trainer.train_x[: trainer.local_batch]
    levels = torch.randint(0, 1000, (x0.shape[0],), device=trainer.device)
    cond = trainer.conditions.batch(torch.arange(x0.shape[0], device=trainer.device), None)
    with FlopCounterMode(display=False) as counter:
        loss = trainer.objective.loss(net, x0, levels, torch.randn_like(x0), cond).mean()
        loss.backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def sampling(trainer: Trainer, n: int, device: torch.device) -> dict[str, float]:
    """Images/s of 50-step DDIM: our ``generate`` and diffusers' DDIMPipeline on the same U-Net."""
    net = trainer._unwrapped.eval()
    shape = tuple(trainer.model_shape)
    pipe = DDIMPipeline(unet=net.inner, scheduler=DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear"))
    pipe.set_progress_bar_config(disable=True)

    def ours() -> None:
        generate(
            net,
            trainer.objective,
            shape,
            n,
            solver="ddim",
            steps=50,
            generator=torch.Generator().manual_seed(0),
            device=device,
        )

    def theirs() -> None:
        pipe(batch_size=n, num_inference_steps=50, generator=torch.Generator().manual_seed(0), output_type="np")

    times: dict[str, list[float]] = {"ours": [], "DDIMPipeline": []}
    with torch.no_grad():
        ours(), theirs()  # warm-up
        for _ in range(2):
            times["ours"].append(_time(ours, 1, device))
            times["DDIMPipeline"].append(_time(theirs, 1, device))
    net.train()
    return {k: n / statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rate = matmul_rate(device)
    print(f"device {device}, {torch.get_num_threads()} threads; fp32 matmul {rate / 1e9:.1f} GFLOP/s")
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "matmul_gflops": rate / 1e9,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "reps": args.reps,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            trainers = {v: _trainer(model, v, args, Path(tmp)) for v in variants}
            contenders = {f"ours:{v}": t.train_step for v, t in trainers.items()}
            contenders["reference"] = Reference(trainers[variants[0]]).train_step
            for step in contenders.values():
                for _ in range(args.warmup):
                    step()
            times: dict[str, list[float]] = {name: [] for name in contenders}
            names = list(contenders)
            for r in range(args.reps):  # each round in a rotated order: no contender always runs first or last
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    times[name].append(_time(contenders[name], args.steps, device))
            ips = {name: args.steps * args.batch_size / statistics.median(t) for name, t in times.items()}
            flops = step_flops(trainers[variants[0]])
            row: dict[str, Any] = {
                "images_per_s": ips,
                "ratio_to_reference": {k: v / ips["reference"] for k, v in ips.items() if k != "reference"},
                "gflop_per_step": flops / 1e9,
                "flop_fraction": {k: flops * v / args.batch_size / rate for k, v in ips.items()},
                "params_m": sum(p.numel() for p in trainers[variants[0]]._unwrapped.parameters()) / 1e6,
            }
            if args.sample_n and model.startswith("unet"):
                row["ddim50_images_per_s"] = sampling(trainers[variants[0]], args.sample_n, device)
            results["models"][model] = row
            print(f"\n{model} ({row['params_m']:.2f}M params, {row['gflop_per_step']:.2f} GFLOP per step fwd+bwd)")
            for name, value in ips.items():
                ratio = "" if name == "reference" else f"  x{row['ratio_to_reference'][name]:.2f} vs reference"
                print(f"  {name:22s} {value:8.1f} img/s  {row['flop_fraction'][name]:6.1%} of matmul rate{ratio}")
            if "ddim50_images_per_s" in row:
                s = row["ddim50_images_per_s"]
                print(f"  DDIM-50 sampling: ours {s['ours']:.1f} img/s, DDIMPipeline {s['DDIMPipeline']:.1f} img/s")
            del trainers, contenders
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
