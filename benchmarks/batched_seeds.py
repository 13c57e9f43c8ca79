"""Would training a grid's seeds as one batched model make grids cheaper? Per-seed throughput, measured.

Issue 32 proposed training the K seeds of a grid arm as one model with stacked parameters
(``torch.func.stack_module_state`` + ``functional_call`` + ``vmap``), on the premise that a tiny model's step
is mostly per-call overhead. This script measures that premise on the grids' own networks and batches: the
``gmm`` presets' residual MLP (8-D, width 128, 3 blocks, batch 256) and the ``digits`` presets' tiny U-Net
(8x8, channels 32/64, batch 64). For each, it times

- **one seed alone**: an ordinary module, its forward, backward and fused AdamW step, as a grid worker runs it;
- **K seeds batched** (K = 1, 4, 8, 16 by default): the K modules' parameters stacked, one ``vmap``-ed
  forward of the K batches, one backward of the summed losses, one foreach AdamW step over the stacked
  tensors (the fastest optimizer path for stacked parameters);
- **sampling**: one denoiser call on an evaluation batch (``--eval-n`` items, as one DDIM step of a grid's
  evaluation), alone and ``vmap``-ed over K seeds,

and prints milliseconds per seed-step and the speed-up per seed of the batched path over the single one. To say
whether a step is overhead or arithmetic, it also counts a single step's FLOPs (``torch.utils.flop_counter``)
and gives the achieved rate as a fraction of the machine's fp32 matrix-multiply rate on the same threads
(``throughput.py``'s measurement): a step near that rate has no per-call overhead left for batching to remove.
Both paths use the same number of torch threads (``--threads``, default 1: a grid's worker), and every
contender is timed ``--reps`` rounds in rotated order in one process, so that a slow phase of a shared machine
hits all of them; medians are reported. It measures only the arithmetic a batched path would share: the
trainer's bookkeeping around a step (sampler, logging, checkpoints) would stay per seed either way.

Run (about 3 minutes on 2 cores)::

    python benchmarks/batched_seeds.py
    python benchmarks/batched_seeds.py --models mlp --ks 1,4 --reps 2 --steps 5
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from throughput import matmul_rate  # benchmarks/throughput.py: the machine's fp32 matmul rate
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.utils.flop_counter import FlopCounterMode

from diffusion_curriculum.models import ModelSpec, build_model

# The grids' networks and training batches: the gmm presets (8-D mixture, MLP tiny, batch 256) and the
# digits presets (8x8 digits, U-Net tiny, batch 64), as their preset files set them.
MODELS: dict[str, tuple[ModelSpec, int]] = {
    "mlp": (ModelSpec(arch="mlp", preset="tiny", data_shape=(8,)), 256),
    "unet": (ModelSpec(arch="unet", preset="tiny", data_shape=(1, 8, 8)), 64),
}


def _seeded_model(spec: ModelSpec, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # benchmark-only initialisation; the library's runs seed through their config
    return build_model(spec)


def _single(spec: ModelSpec, batch: int, eval_n: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """A training step and an evaluation call of one ordinary module, as a grid worker runs them."""
    model = _seeded_model(spec, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *spec.data_shape, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    xe = torch.randn(eval_n, *spec.data_shape, generator=g)
    te = torch.full((eval_n,), 500)

    def train() -> None:
        loss = (model(x, t) - x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def evaluate() -> None:
        model(xe, te)

    return train, evaluate


def _step_flops(spec: ModelSpec, batch: int) -> int:
    """FLOPs of one training step's forward and backward pass of one seed (the optimizer's are negligible)."""
    model = _seeded_model(spec, 0)
    x, t = torch.randn(batch, *spec.data_shape), torch.randint(0, 1000, (batch,))
    with FlopCounterMode(display=False) as counter:
        (model(x, t) - x).square().mean().backward()
    return counter.get_total_flops()


def stacked(models: list[nn.Module]) -> tuple[Callable[..., Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """K modules of one architecture as one: their stacked parameters (leaves to optimise), buffers, and a
    ``vmap``-ed call ``forward(params, buffers, x, t)`` over a leading seed dimension of every argument."""
    params, buffers = stack_module_state(models)
    params = {name: p.detach().requires_grad_() for name, p in params.items()}
    skeleton = copy.deepcopy(models[0]).to("meta")

    def call(p: dict[str, Tensor], b: dict[str, Tensor], xi: Tensor, ti: Tensor) -> Tensor:
        return functional_call(skeleton, (p, b), (xi, ti))

    return vmap(call), params, buffers


def _batched(spec: ModelSpec, batch: int, eval_n: int, k: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """The same step and call for K seeds as one stacked, ``vmap``-ed model (issue 32's proposal)."""
    forward, params, buffers = stacked([_seeded_model(spec, s) for s in range(k)])
    opt = torch.optim.AdamW(params.values(), lr=1e-4, foreach=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(k, batch, *spec.data_shape, generator=g)
    t = torch.randint(0, 1000, (k, batch), generator=g)
    xe = torch.randn(k, eval_n, *spec.data_shape, generator=g)
    te = torch.full((k, eval_n), 500)

    def train() -> None:
        loss = (forward(params, buffers, x, t) - x).square().mean(dim=tuple(range(1, x.dim()))).sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def evaluate() -> None:
        forward(params, buffers, xe, te)

    return train, evaluate


def _time(fn: Callable[[], None], steps: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def measure(model: str, ks: list[int], steps: int, reps: int, eval_n: int) -> dict[str, Any]:
    """Milliseconds per seed for a training step and an evaluation call, single and batched by K."""
    spec, batch = MODELS[model]
    contenders: dict[str, tuple[int, tuple[Callable[[], None], Callable[[], None]]]] = {
        "single": (1, _single(spec, batch, eval_n))
    }
    for k in ks:
        contenders[f"batched K={k}"] = (k, _batched(spec, batch, eval_n, k))
    names = list(contenders)
    times: dict[str, dict[str, list[float]]] = {n: {"train": [], "evaluate": []} for n in names}
    for r in range(reps):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            k, (train, evaluate) = contenders[name]
            times[name]["train"].append(_time(train, steps) / k)
            times[name]["evaluate"].append(_time(evaluate, max(1, steps // 4)) / k)
    rows = {}
    for name in names:
        rows[name] = {what: 1000 * statistics.median(v) for what, v in times[name].items()}
    for name in names:
        for what in ("train", "evaluate"):
            rows[name][f"{what}_speedup"] = rows["single"][what] / rows[name][what]
    flops = _step_flops(spec, batch)
    return {"model": model, "batch": batch, "eval_n": eval_n, "rows": rows, "step_gflop": flops / 1e9}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the measurement (``argv``: the command line's arguments) and return what ``--out`` writes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp,unet", help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--ks", default="1,4,8,16", help="batch sizes in seeds, comma-separated")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per contender and round")
    parser.add_argument("--reps", type=int, default=3, help="rounds, in rotated order")
    parser.add_argument("--eval-n", type=int, default=500, help="items per evaluation call (a grid's eval.n)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a grid worker has 1)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    rate = matmul_rate(torch.device("cpu"))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"fp32 matmul rate on {args.threads} thread(s): {rate / 1e9:.1f} GFLOP/s")
    results = []
    for model in args.models.split(","):
        if model not in MODELS:
            parser.error(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
        res = measure(model, ks, args.steps, args.reps, args.eval_n)
        results.append(res)
        achieved = res["step_gflop"] / (res["rows"]["single"]["train"] / 1000)
        print(
            f"\n{model} (training batch {res['batch']}, evaluation batch {res['eval_n']}): one step "
            f"{res['step_gflop']:.3f} GFLOP, {achieved:.1f} GFLOP/s alone, {achieved / (rate / 1e9):.0%} of the "
            "matmul rate; ms per seed:"
        )
        print(f"{'':>14} {'train step':>11} {'speed-up':>9} {'eval call':>10} {'speed-up':>9}")
        for name, row in res["rows"].items():
            print(
                f"{name:>14} {row['train']:>11.2f} {row['train_speedup']:>8.2f}x"
                f" {row['evaluate']:>10.2f} {row['evaluate_speedup']:>8.2f}x"
            )
    record = {"threads": args.threads, "torch": torch.__version__, "matmul_gflops": rate / 1e9, "results": results}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)
    return record


if __name__ == "__main__":
    main()
