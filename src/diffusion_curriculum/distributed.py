"""The collectives the timestep samplers use to keep one state on every rank.

A sampler under ``torch.distributed`` reduces what it learns from each step over all ranks inside
``observe`` (:func:`all_reduce_sum`, :func:`all_gather_cat`), so every rank holds the same state
afterwards, its statistics included. Its random draws need no per-rank state either: each call of
``sample`` seeds a fresh generator from ``(seed, rank, draw index)``
(:func:`~diffusion_curriculum.samplers.draw_seed`). So the state any one rank saves restores every
rank exactly, as Accelerate's ``save_state`` needs: it writes a registered object's ``state_dict()``
from the main process only (``custom_checkpoint_<i>.pkl``; diffusers' training scripts even call
``save_state`` on the main process alone) and every rank loads that one file.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_cat", "all_reduce_sum", "collective_device", "distributed"]


def distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def collective_device() -> torch.device:
    """Where a collective's tensors must live: the current GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(buf: Tensor) -> Tensor:
    """``buf`` summed over all ranks (a CPU tensor); ``buf`` itself when not distributed."""
    if not distributed():
        return buf
    reduced = buf.to(collective_device())
    dist.all_reduce(reduced)
    return reduced.cpu()


def all_gather_cat(values: Tensor) -> Tensor:
    """The 1-D ``values`` of every rank concatenated in rank order (sizes may differ between ranks):
    every rank gets the same tensor. Without ``torch.distributed``, ``values`` itself."""
    if not distributed():
        return values
    device = collective_device()
    size = torch.tensor([values.numel()], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = torch.zeros(max(counts), dtype=values.dtype, device=device)
    padded[: values.numel()] = values.to(device)
    parts = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n].cpu() for p, n in zip(parts, counts, strict=True)])
