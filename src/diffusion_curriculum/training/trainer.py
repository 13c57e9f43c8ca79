"""The training loop: data, model, objective and weighting around the timestep sampler.

One process or many (Accelerate / torchrun; gloo on CPU). The loop owns no curriculum logic: the
sampler decides which noise levels are drawn and when stages advance, the weighting how much each
sample counts, the objective what the network predicts. Building those from the config is
:mod:`..assembly`'s job, the run folder's rules are :mod:`..runs`', and conditioning is
:mod:`..conditioning`'s; this module holds the loop and its checkpoint state.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from ..assembly import build_dataset, build_objective, build_sampler, build_weighting, cache_dir
from ..conditioning import Conditioner, TrainingConditions
from ..config import Config, dump_config
from ..data import DatasetBundle
from ..errors import CheckpointError, ConfigError, RunError, TrainingDiverged, UserError
from ..evaluation import HeldoutProbe
from ..export import save_final_model
from ..fault_injection import nan_steps, step_delay_s
from ..interrupts import deferred_signals
from ..models import Denoiser, ModelSpec, build_model
from ..resources import check_fits
from ..runs import checkpoints as ckpt
from ..runs import layout, lock
from ..safe_yaml import short
from ..samplers import rank_seed
from ..sampling import SamplingSettings, sample_decoded
from ..trained import RUN_META, run_meta
from ..visual import save_samples
from ..weighting import Weighting
from .run_log import RunLog

__all__ = ["Trainer", "train", "train_or_resume"]


def _resolve_precision(precision: str) -> str:
    if torch.cuda.is_available():  # TF32 matmuls and convolutions for what still runs in fp32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


LAUNCH_WARNING = (
    "a launcher set MASTER_PORT but this run has 1 process: `accelerate launch --cpu --num_processes N` "
    "starts one process; for N CPU processes run `ACCELERATE_USE_CPU=true torchrun --standalone "
    "--nproc_per_node N $(which diffusion-curriculum) train ...`"
)


def launched_as_one_process(env: Mapping[str, str], world: int) -> bool:
    """True when a multi-process launch was asked for but one process started: Accelerate's simple
    launcher (``accelerate launch --cpu --num_processes N``) sets MASTER_PORT for N > 1 yet starts a
    single process without WORLD_SIZE, and the run would silently train alone."""
    return world == 1 and "MASTER_PORT" in env and "WORLD_SIZE" not in env


class Trainer:
    """Holds everything one run needs; :meth:`run` trains to ``train.max_steps``."""

    def __init__(
        self, config: Config, *, resume: str | None = None, overwrite: bool = False, progress: bool = True
    ) -> None:
        self.config = config
        self.progress = progress
        self.out = config.out_dir
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),
            mixed_precision=_resolve_precision(config.train.precision),
            # A rank that dies or hangs must end the others' collectives, not leave them waiting forever.
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=config.train.dist_timeout_s))],
        )
        acc = self.accelerator
        self.rank, self.world = acc.process_index, acc.num_processes
        if launched_as_one_process(os.environ, self.world):
            warnings.warn(LAUNCH_WARNING, stacklevel=2)
        self.device = acc.device
        if config.train.batch_size % self.world:
            raise ConfigError(f"train.batch_size: {config.train.batch_size} is not divisible by {self.world} processes")
        self.local_batch = config.train.batch_size // self.world
        # Check the folder now but write to it only once everything below has loaded: a bad data
        # path or model option must not cost an --overwrite'd run its files.
        layout.check_folder(self.out, resume, overwrite)

        self.data: DatasetBundle = build_dataset(config)
        if self.data.skipped:
            names = ", ".join(self.data.skipped[:3]) + (
                f" and {len(self.data.skipped) - 3} more" if len(self.data.skipped) > 3 else ""
            )
            acc.print(f"data.on_bad_file=skip: skipped {len(self.data.skipped)} unreadable file(s): {names}")
        self.codec = None
        train_x = self.data.train
        if config.data.vae is not None:
            from ..data.latents import LatentCodec

            self.codec = LatentCodec(config.data.vae, self.device)
            tag = f"{config.data.dataset}:{config.seed}:{config.data.heldout_fraction}"
            train_x = self.codec.encode_cached(train_x, cache_dir() / "latents", tag)
        self.model_shape = tuple(train_x.shape[1:])
        # A batch or sample grid that cannot fit is refused now, before the run folder is touched.
        check_fits("train.batch_size", self.local_batch, self.model_shape, self.device)
        if config.train.sample_every is not None:
            check_fits("sample.n", config.sample.n, self.model_shape, self.device, copies=3)
        if config.train.probe_every is not None:
            check_fits("train.probe_items", config.train.probe_items, self.model_shape, self.device, copies=3)
        self.train_x = train_x.to(self.device)  # in-memory data sets live on the device
        self.conditioner = Conditioner(
            config.model.conditioning,
            n_classes=self.data.n_classes if config.model.conditioning == "class" else 0,
            text_encoder=config.model.text_encoder,
            cache_dir=cache_dir() / "text",
        )
        self.conditions = TrainingConditions(self.conditioner, self.data, config.data.dataset, self.device)

        torch.manual_seed(rank_seed(config.seed, 0))  # model init: identical on every rank
        self.spec = ModelSpec(
            arch=config.model.arch,
            preset=config.model.preset,
            data_shape=self.model_shape,
            conditioning=config.model.conditioning,
            n_classes=self.data.n_classes if config.model.conditioning == "class" else 0,
            text_dim=self.conditioner.encoder.hidden_size if config.model.conditioning == "text" else 0,
        )
        model = build_model(self.spec).to(self.device)
        if config.train.channels_last and self.train_x.ndim == 4:
            model = model.to(memory_format=torch.channels_last)
            self.train_x = self.train_x.contiguous(memory_format=torch.channels_last)
        if config.train.compile:
            model.inner.compile()  # in place: parameter names, checkpoints and saved models stay as they are
        self.objective = build_objective(config)
        self.weighting: Weighting = build_weighting(config)
        self.sampler = build_sampler(config, self.objective, self.rank, data=self.data, weighting=self.weighting)
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=config.train.lr,
            weight_decay=config.train.weight_decay,
            fused=True if config.train.fused_adamw else None,
        )
        # Stepped by hand once per optimizer step: Accelerate's wrapper would step it once per process.
        self.lr_scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=config.train.warmup_steps)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.ema = EMAModel(self._unwrapped.parameters(), decay=config.train.ema_decay, foreach=True)
        self.ema.to(self.device)

        # One generator per purpose and rank, so each stream is reproducible and resumable.
        self.data_gen = torch.Generator(self.device).manual_seed(rank_seed(config.seed + 1, self.rank))
        self.noise_gen = torch.Generator(self.device).manual_seed(rank_seed(config.seed + 2, self.rank))
        self.drop_gen = torch.Generator(self.device).manual_seed(rank_seed(config.seed + 3, self.rank))
        self.fault_steps = nan_steps(self.rank)
        self.step_delay = step_delay_s()
        self.probe = None  # the held-out probe (dense learning curve), on the main process
        if config.train.probe_every is not None and acc.is_main_process:
            args = (config, self.data, self.objective, self.conditioner, self.device)
            self.probe = HeldoutProbe(*args, items=config.train.probe_items, codec=self.codec)
        self.step = 0
        self.skipped_steps = 0  # steps whose loss was NaN or inf, over the whole run
        self.bad_streak = 0  # consecutive such steps up to now
        self.window_loss, self.window_good = 0.0, 0  # loss sum and count of good steps since the last log line
        self.last_log_step = 0  # the step of the last metrics.jsonl line: stage changes after it go in the next
        self.last_probe_step = 0  # the step of the last probe.jsonl line
        self._locked = False  # whether this process holds the run folder's lock (the main process does)
        try:
            if resume is not None:
                self._resume(resume)
            else:
                self._claim_folder(overwrite)
        except BaseException:
            self.close()
            raise

    # ----- setup ---------------------------------------------------------------------------
    @property
    def _unwrapped(self) -> Denoiser:
        return self.accelerator.unwrap_model(self.model)

    def _lock(self, resume: str | None, overwrite: bool) -> None:
        """Take the run folder's lock (the main process; a second writer is refused naming this pid) and
        check the folder again under it: another process may have started a run there since."""
        if self.accelerator.is_main_process and not self._locked:
            lock.acquire(self.out)
            self._locked = True
            layout.check_folder(self.out, resume, overwrite)

    def close(self) -> None:
        """Release the run folder's lock (the end of :func:`train`; a process that ends releases it too)."""
        if self._locked:
            lock.release(self.out)
            self._locked = False

    def _claim_folder(self, overwrite: bool) -> None:
        """Start the run's files: empty the folder's run artefacts if overwriting, write config.yaml."""
        if self.accelerator.is_main_process:
            self._lock(None, overwrite)
            if overwrite:
                layout.remove_run_files(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
            dump_config(self.config, self.out / layout.CONFIG)
        self.accelerator.wait_for_everyone()

    # ----- checkpoints ---------------------------------------------------------------------
    def _rank_state(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler.state_dict(),
            "data_gen": self.data_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
            "drop_gen": self.drop_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "log_window": [self.window_loss, self.window_good],
            "last_log_step": self.last_log_step,
        }

    def save_checkpoint(self) -> Path | None:
        """Write this step's checkpoint (all ranks take part) and keep the newest few. A SIGINT or SIGTERM
        that comes meanwhile is held until the checkpoint is published, then stops the run."""
        with deferred_signals():
            return self._save_checkpoint()

    def _save_checkpoint(self) -> Path | None:
        acc = self.accelerator
        root = self.out / layout.CHECKPOINTS
        staging = ckpt.staging_dir(root, self.step)
        if acc.is_main_process:
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True)
        acc.wait_for_everyone()
        ckpt.save_state(self._rank_state(), staging / ckpt.rank_file(self.rank))
        if acc.is_main_process:
            state = {
                "step": self.step,
                "model": self._unwrapped.state_dict(),
                "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.lr_scheduler.state_dict(),
                "config": self.config.to_dict(),
                "meta": run_meta(self.spec, self.data.class_names, self.step),
                "skipped_steps": self.skipped_steps,
                "bad_streak": self.bad_streak,
                # the step of each log's last line: a resume checks that the logs still reach them
                "logs": {layout.METRICS: self.last_log_step, layout.PROBE: self.last_probe_step},
            }
            ckpt.save_state(state, staging / ckpt.STATE)
        acc.wait_for_everyone()
        path = None
        if acc.is_main_process:
            path = ckpt.publish(root, self.step, self.world)
            ckpt.prune(root, self.config.train.keep_checkpoints)
        acc.wait_for_everyone()
        return path

    def _resume(self, which: str) -> None:
        """Restore the newest intact (or the given) checkpoint; a run killed before its first
        checkpoint starts again from step 0.

        The checkpoint must have been written by this same experiment (its own saved config is
        checked, as the folder's config.yaml is) and the logs must still reach the lines it was
        written after (a log cut short loses lines the resumed run would not write again), else an
        older checkpoint is used, with a notice; the checkpoints after the one used are deleted, as
        the log lines after it are."""
        root = self.out / layout.CHECKPOINTS
        warn = self.accelerator.print
        self._lock(which, False)
        if (self.out / layout.CONFIG).exists():
            layout.check_same_run(layout.load_run_config(self.out), self.config, self.out / layout.CONFIG)
        logs = layout.read_logs(self.out, announce=self.accelerator.is_main_process)

        gaps: list[str] = []

        def usable(path: Path) -> str | None:
            state = ckpt.load_state(path, with_tensors=False)
            layout.check_same_run(state.get("config") or {}, self.config, path / ckpt.STATE)
            gap = layout.log_gap(logs, state.get("logs") or {})
            if gap is not None:
                gaps.append(f"{self.out / gap}")
            return gap

        if which == "latest":
            path = ckpt.find_latest(root, warn=warn, accept=usable)
            if path is None and ckpt.list_checkpoints(root):
                why = f"the oldest intact one is past the logs: {gaps[-1]}" if gaps else "none is intact"
                raise RunError(f"--resume latest: no checkpoint under {root} can continue this run ({why})")
        else:
            path = Path(which)
            ckpt.verify(path)
            gap = usable(path)
            if gap is not None:
                raise RunError(f"--resume {path}: {gap}; lines are missing, so it cannot continue this run exactly")
        if path is None:
            warn(f"--resume latest: {self.out} holds no checkpoint yet; starting it again from step 0")
        else:
            self._load_checkpoint(path)
            if self.finished:
                warn(
                    f"{self.out} is already finished: trained to train.max_steps = {self.step} and its model "
                    "exported; nothing to do (to train it further, raise train.max_steps)"
                )
            else:
                warn(f"resumed from {path} at step {self.step}")
        if self.accelerator.is_main_process:
            with deferred_signals():
                layout.truncate_logs(self.out, logs, self.step)
                ckpt.discard_after(root, self.step)
                dump_config(self.config, self.out / layout.CONFIG)
        self.accelerator.wait_for_everyone()

    def _load_checkpoint(self, path: Path) -> None:
        """Load every piece of state a checkpoint holds, this rank's included. Tensors are read to the CPU
        (a checkpoint holds CPU tensors); loading copies them over. A state that lacks a piece or does not
        fit this model is refused naming the file."""
        try:
            self._restore(path)
        except UserError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
            raise CheckpointError(
                f"{path}: does not hold the state of this run ({exc.__class__.__name__}: {short(exc)})"
            ) from None

    def _restore(self, path: Path) -> None:
        state = ckpt.load_state(path)
        self._unwrapped.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.ema.to(self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        rank_state = ckpt.load_rank_state(path, self.rank)
        self.last_probe_step = int((state.get("logs") or {}).get(layout.PROBE, 0))
        self.sampler.load_state_dict(rank_state["sampler"])
        self.data_gen.set_state(rank_state["data_gen"].to("cpu"))
        self.noise_gen.set_state(rank_state["noise_gen"].to("cpu"))
        self.drop_gen.set_state(rank_state["drop_gen"].to("cpu"))
        torch.set_rng_state(rank_state["torch_rng"].to("cpu"))
        if rank_state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rank_state["cuda_rng"])
        self.window_loss, self.window_good = rank_state.get("log_window", (0.0, 0))
        self.last_log_step = int(rank_state.get("last_log_step", state["step"]))
        self.step = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.bad_streak = int(state.get("bad_streak", 0))

    # ----- the loop ------------------------------------------------------------------------
    def train_step(self) -> float | None:
        """One optimizer step; returns this rank's loss, or None when some rank's loss was NaN or inf
        and the step was skipped on every rank (no optimizer, LR, EMA or pacing update)."""
        cfg = self.config.train
        idx = torch.randint(self.train_x.shape[0], (self.local_batch,), generator=self.data_gen, device=self.device)
        x0 = self.train_x[idx]
        drop = None
        if self.conditions.kind != "none" and cfg.cond_drop_prob > 0:
            drop = torch.rand(self.local_batch, generator=self.drop_gen, device=self.device) < cfg.cond_drop_prob
        cond = self.conditions.batch(idx, drop)
        levels = self.sampler.sample(self.local_batch, device=self.device)
        sample_weights = self.sampler.loss_weights(levels)  # e.g. importance weights; ones for the curriculum
        noise = torch.randn(x0.shape, generator=self.noise_gen, device=self.device)
        with self.accelerator.autocast():
            raw = self.objective.loss(self.model, x0, levels, noise, cond)
        weights = self.weighting(
            self.objective.snr(levels), self.objective.target, sigma_data=self.objective.sigma_data
        ).to(self.device)
        per_sample = raw.float() * weights
        if self.step + 1 in self.fault_steps:  # testing hook, see fault_injection
            per_sample = per_sample * float("nan")
        loss = (per_sample * sample_weights).mean()
        self.accelerator.backward(loss)
        value, finite = self._loss_and_agreement(loss)
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if cfg.grad_clip is not None:
            self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(self._unwrapped.parameters())
        self.sampler.observe(per_sample.detach(), levels)
        return value

    def _loss_and_agreement(self, loss: torch.Tensor) -> tuple[float, bool]:
        """This rank's loss as a float, and whether every rank's loss is finite: one device-to-host copy
        (logging needs the loss anyway) and, across processes, one all-reduce of a scalar."""
        detached = loss.detach().float()
        bad = (~torch.isfinite(detached)).float()
        if self.world > 1:
            dist.all_reduce(bad)
        value, n_bad = torch.stack([detached, bad]).tolist()
        return value, n_bad == 0

    @property
    def finished(self) -> bool:
        """Whether the run has trained to ``train.max_steps`` and exported its model at that step: resuming it then
        has nothing to do (a run killed between its last checkpoint and the export only exports)."""
        if self.step < self.config.train.max_steps:
            return False
        try:
            exported = json.loads((self.out / layout.MODEL / RUN_META).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(exported, dict) and exported.get("step") == self.step

    def run(self) -> Path:
        """Train to ``train.max_steps``, logging, sampling and checkpointing on the way; a finished run returns at
        once, without a progress bar."""
        if self.finished:
            return self.out
        cfg = self.config.train
        window_start, window_steps = time.perf_counter(), 0
        checkpoint_due = False  # a periodic checkpoint that fell on a skipped step waits for a good one
        self.model.train()
        main = self.accelerator.is_main_process
        with RunLog(self.out, self.step, cfg.max_steps, main=main, progress=self.progress) as log:
            while self.step < cfg.max_steps:
                stage_trained, unlocked = self.sampler.stage, self.sampler.unlocked_intervals
                loss = self.train_step()
                self.step += 1
                window_steps += 1
                if loss is None:
                    self.skipped_steps += 1
                    self.bad_streak += 1
                else:
                    self.bad_streak = 0
                    self.window_loss += loss
                    self.window_good += 1
                diverged = self.bad_streak >= cfg.max_bad_steps
                last = self.step == cfg.max_steps
                if self.step % cfg.log_every == 0 or last or diverged:
                    elapsed = time.perf_counter() - window_start
                    log.write(self._log_record(stage_trained, unlocked, window_steps, elapsed), self.sampler.n_stages)
                    window_start, window_steps = time.perf_counter(), 0
                    self.window_loss, self.window_good = 0.0, 0
                    self.last_log_step = self.step
                log.advance(self.step)
                if self.step_delay:  # testing hook, see fault_injection
                    time.sleep(self.step_delay)
                if diverged:
                    raise self._diverged()
                if self.probe is not None and (self.step % cfg.probe_every == 0 or last):
                    with self._ema_weights() as ema_model:  # the model the run exports
                        log.probe(self.step, self.probe(ema_model))
                    self.last_probe_step = self.step
                if cfg.sample_every and (self.step % cfg.sample_every == 0 or last):
                    self.write_samples(self.out / layout.SAMPLES / f"step_{self.step:08d}.png")
                checkpoint_due = checkpoint_due or bool(cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0)
                if last or (checkpoint_due and self.bad_streak == 0):
                    self.save_checkpoint()
                    checkpoint_due = False
        self.save_model()
        self.accelerator.wait_for_everyone()
        return self.out

    def _diverged(self) -> TrainingDiverged:
        """The one-line error that stops a run whose loss stayed NaN or inf; no checkpoint is written."""
        kept = ckpt.list_checkpoints(self.out / layout.CHECKPOINTS)
        last = f"the last checkpoint is {kept[-1]}" if kept else "there is no checkpoint"
        return TrainingDiverged(
            f"train.max_bad_steps: the loss was NaN or inf at {self.bad_streak} consecutive steps up to step "
            f"{self.step}; stopped without saving, {last}"
        )

    def _log_record(self, stage: int, unlocked: list[tuple[Any, Any]], steps: int, elapsed: float) -> dict[str, Any]:
        """One metrics.jsonl line: the stage and unlocked range trained at this step, rank 0's mean loss
        over the window's good steps (null if all were skipped), the run's skipped-step total, all ranks'
        draws and mean loss per cluster since the last line, the stage changes since the last line with their
        causes, and what adaptive pacing watches."""
        stats = self.sampler.stats(reset=True)
        record: dict[str, Any] = {
            "step": self.step,
            "loss": self.window_loss / self.window_good if self.window_good else None,
            "skipped_steps": self.skipped_steps,
            "stage": stage,
            "n_stages": stats["n_stages"],
            "unlocked": [list(iv) for iv in unlocked],
            "lr": self.lr_scheduler.get_last_lr()[0],
            "images_per_s": steps * self.config.train.batch_size / max(elapsed, 1e-9),
            "cluster_loss": [None if math.isnan(v) else v for v in stats["cluster_loss"]],
            "cluster_draws": stats["cluster_draws"],
            "stage_changes": [list(t) for t in self.sampler.transitions if t[0] > self.last_log_step],
            "pacing": stats["pacing"],
        }
        if self.world > 1:
            stages = torch.tensor([stage], device=self.device)
            record["rank_stages"] = self.accelerator.gather(stages).tolist()
        return record

    # ----- outputs -------------------------------------------------------------------------
    @contextmanager
    def _ema_weights(self) -> Iterator[Denoiser]:
        """The model with the EMA weights swapped in; its own weights again afterwards."""
        model = self._unwrapped
        self.ema.store(model.parameters())
        self.ema.copy_to(model.parameters())
        try:
            yield model
        finally:
            self.ema.restore(model.parameters())

    @torch.no_grad()
    def sample_images(self, n: int, seed: int = 0) -> torch.Tensor:
        """n samples from the EMA weights with the config's solver (rank 0's view), decoded
        to data space when training on VAE latents."""
        labels = torch.arange(n) % max(self.data.n_classes, 1)
        cond, uncond = self.conditioner.for_labels(labels, self.device)
        settings = SamplingSettings.resolve(self.objective, self.config, conditional=cond is not None)
        with self._ema_weights() as model:
            model.eval()
            try:
                return sample_decoded(
                    model,
                    self.objective,
                    self.config,
                    self.model_shape,
                    n,
                    settings,
                    cond=cond,
                    uncond=uncond,
                    seed=seed,
                    device=self.device,
                    codec=self.codec,
                )
            finally:
                model.train()

    def write_samples(self, path: Path) -> None:
        if self.accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            samples = self.sample_images(self.config.sample.n)
            save_samples(samples, self.data.train[:2000], path, title=f"step {self.step}")
        self.accelerator.wait_for_everyone()

    def save_model(self) -> None:
        """Save the EMA weights for `diffusion-curriculum sample` and, where one fits, a diffusers pipeline."""
        if not self.accelerator.is_main_process:
            return
        with self._ema_weights() as model:
            vae = self.codec.vae if self.codec is not None else None
            save_final_model(self.out, model, self.objective, self.data.class_names, self.step, vae)


def train(config: Config, *, resume: str | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """Train one run as configured; returns the run folder. ``progress=False`` hides the progress bar."""
    trainer = Trainer(config, resume=resume, overwrite=overwrite, progress=progress)
    # No barrier on the way out: run() ends with one, and after a failure another would only wait
    # (up to train.dist_timeout_s) for a rank that may be dead or stuck.
    try:
        return trainer.run()
    finally:
        trainer.close()


def train_or_resume(config: Config, *, progress: bool = False) -> Path:
    """Train ``config``'s run, resuming from its newest intact checkpoint if it has one: how a restarted
    grid or study continues a killed job (a folder without a checkpoint has nothing to keep and starts afresh)."""
    if ckpt.list_checkpoints(config.out_dir / layout.CHECKPOINTS):
        return train(config, resume="latest", progress=progress)
    return train(config, overwrite=config.out_dir.exists(), progress=progress)
