"""How fast the denoising loss of each timestep interval converges (the paper's first observation).

For each of K intervals (clusters of the core, uniform by default) a fresh model is trained on that
interval alone, with the same data, model, seed and budget as every other interval; its loss curve
gives the steps to converge, and its final model a held-out denoising measure. Jobs (interval, seed)
are independent runs of the ordinary trainer (``curriculum.only_cluster``), resumable and run in
parallel worker processes or as Slurm jobs.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml

from ..atomic import write_atomic
from ..config import Config, ConfigError
from ..jobs import DONE, check_claim, claim_folder, launch_jobs, mark_done
from ..progress import PROGRESS_DIR, JobPlan, ProgressBoard, reporting
from ..runs import checkpoints as ckpt
from ..runs.lock import folder_lock
from ..runs.records import read_json, read_jsonl
from ..slurm import SLURM_DIR, SlurmOptions, check_cluster
from .rule import ConvergenceRule

__all__ = ["run_convergence_study"]

# What a study writes into its folder besides study.yaml and runs/ (--overwrite deletes exactly these).
STUDY_OUTPUTS = ("study.jsonl", "study.md", "convergence.png", "loss_curves.png", "kl.png", PROGRESS_DIR, SLURM_DIR)


# ----- one job: train on one interval, measure, mark done -----------------------------------------
def _job_dir(out: Path, interval: int, seed: int) -> Path:
    return out / "runs" / f"interval{interval:02d}_seed{seed}"


def _read_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    steps, losses = [], []
    for record in read_jsonl(run_dir / "metrics.jsonl").records:
        if record.get("loss") is not None:
            steps.append(int(record["step"]))
            losses.append(float(record["loss"]))
    return steps, losses


def _heldout_measure(run_dir: Path, config: Config, interval: tuple) -> tuple[str, float]:
    """The final (EMA) model's denoising quality on its interval: the excess error over the analytic
    denoiser for mixture data, else the unweighted held-out loss."""
    from ..assembly import build_dataset
    from ..evaluation import heldout_cluster_losses
    from ..metrics.synthetic import excess_denoising_error
    from ..trained import load_trained

    trained = load_trained(run_dir)
    data = build_dataset(config)
    if data.gmm is not None and config.model.conditioning == "none":
        g = torch.Generator().manual_seed(config.seed)
        value = excess_denoising_error(
            trained.model, trained.objective, data.gmm, [interval], n_per_cluster=4096, generator=g
        )[0]
        return "excess_error", value
    value = heldout_cluster_losses(trained, data, [interval], torch.device("cpu"), seed=config.seed)[0]
    return "heldout_loss", value


def train_interval(config_dict: dict[str, Any], interval: int, seed: int, out: str, threads: int) -> dict[str, Any]:
    """Train, measure and mark done one (interval, seed) job; resumable at every point. A worker's job."""
    from ..assembly import clusters_for
    from ..training.trainer import train_or_resume

    torch.set_num_threads(threads)
    run_dir = _job_dir(Path(out), interval, seed)
    done = run_dir / DONE
    if done.is_file():
        return read_json(done, "record of a finished job (delete it to run the job again)")
    config = _job_config(config_dict, interval, seed, run_dir)
    start = time.perf_counter()
    with reporting(Path(out) / PROGRESS_DIR / f"{run_dir.name}.json"):
        train_or_resume(config)
        cluster = clusters_for(config)[interval]
        measure, value = _heldout_measure(run_dir, config, cluster)
    steps, losses = _read_curve(run_dir)
    record = {
        "interval": interval,
        "seed": seed,
        "range": list(cluster),
        "steps": steps,
        "loss": losses,
        "measure": measure,
        "heldout": value,
        "wall_s": round(time.perf_counter() - start, 2),
    }
    mark_done(done, record)
    ckpt.prune(run_dir / "checkpoints", keep=1)
    return record


def _train_interval_star(job: tuple) -> dict[str, Any]:
    return train_interval(*job)


def _train_interval_config(job: tuple) -> Config:
    """The training config of the job that ``_train_interval_star(job)`` runs (for a Slurm job that trains it
    under torchrun)."""
    config_dict, interval, seed, out, _ = job
    return _job_config(config_dict, interval, seed, _job_dir(Path(out), interval, seed))


def _job_config(config_dict: dict[str, Any], interval: int, seed: int, run_dir: Path) -> Config:
    from ..config import dotted_overrides, load_config

    overrides = {
        "seed": seed,
        "out": str(run_dir),
        "name": run_dir.name,
        "curriculum.only_cluster": interval,
        "train.sample_every": None,
    }
    return load_config(overrides=dotted_overrides(config_dict) | overrides)


# ----- the study ------------------------------------------------------------------------------
def _prepare_out(out: Path, study: dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix two different studies in one folder; ``overwrite`` starts afresh.

    The saved config is compared after today's defaults fill it in, so that a study started before
    a config key was added to the package still resumes (the new key takes its default)."""
    text = yaml.safe_dump(study, sort_keys=True)
    saved = out / "study.yaml"
    if saved.is_file() and not overwrite and saved.read_text() != text and _normalized(saved) == study:
        write_atomic(saved, text)
    claim_folder(out, "study.yaml", text, "study", overwrite, STUDY_OUTPUTS)


def _normalized(saved: Path) -> dict[str, Any] | None:
    """A saved study description with its config completed by the current defaults; None if unreadable."""
    from ..config import dotted_overrides, load_config

    try:
        study = yaml.safe_load(saved.read_text())
        config = load_config(overrides=dotted_overrides(study["config"])).to_dict()
    except (ValueError, KeyError, TypeError, yaml.YAMLError):
        return None
    config.pop("out")
    return {**study, "config": config}


def run_convergence_study(
    config: Config,
    out: str | Path,
    *,
    seeds: list[int],
    rule: ConvergenceRule | None = None,
    workers: int = 1,
    threads: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    slurm: SlurmOptions | None = None,
) -> list[dict[str, Any]]:
    """Train every (interval, seed) job of ``config`` (K = ``curriculum.n_clusters`` intervals of
    its clustering), apply ``rule`` and write study.jsonl, the figures and study.md under ``out``.

    ``threads`` per job is fixed (not derived from ``workers``) so that the numbers do not depend on
    how many workers ran them. A restarted study skips finished jobs and resumes the others. With ``slurm``
    the unfinished jobs run as Slurm jobs with its options (``workers`` is then unused; a restarted study
    re-attaches to the jobs still queued or running). Returns the per-(interval, seed) records.
    """
    from ..assembly import clusters_for

    rule = rule or ConvergenceRule()
    out = Path(out)
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    base = config.to_dict()
    base.pop("out")
    study = {"kind": "convergence", "config": base, "seeds": list(seeds)}
    clusters = clusters_for(config)
    K = len(clusters)
    for k in range(K):  # every job's config must validate before any training starts
        _job_config(base, k, seeds[0], _job_dir(out, k, seeds[0]))
    if slurm is not None:
        check_cluster(slurm)
    check_claim(out, "study.yaml", "study", overwrite, STUDY_OUTPUTS)  # before the lock: a refused folder is untouched
    with folder_lock(out):
        return _run_study(config, out, study, seeds, rule, workers, threads, overwrite, progress, slurm)


def _run_study(config, out, study, seeds, rule, workers, threads, overwrite, progress, slurm) -> list[dict[str, Any]]:
    """The study itself, with ``out`` locked."""
    from ..assembly import clusters_for
    from .report import write_convergence_outputs

    base, K = study["config"], len(clusters_for(config))
    _prepare_out(out, study, overwrite)
    here = str(out.resolve()) if slurm is not None else str(out)  # absolute: a Slurm job may start elsewhere
    jobs = [(base, k, s, here, threads) for s in seeds for k in range(K)]
    names = [_job_dir(out, k, s).name for _, k, s, _, _ in jobs]
    done_before = {name for name in names if (out / "runs" / name / DONE).is_file()}
    plans = [JobPlan(name, (("train", config.train.max_steps),)) for name in names]
    parallel = len(jobs) - len(done_before) if slurm is not None else min(workers, len(jobs))
    board = ProgressBoard("study convergence", out / PROGRESS_DIR, plans, done_before, parallel, quiet=not progress)
    results = launch_jobs(
        _train_interval_star,
        jobs,
        names,
        out,
        workers=workers,
        slurm=slurm,
        board=board,
        train_config=_train_interval_config,
    )
    records = []
    with board:
        for record in results:
            records.append(record)
            name = _job_dir(out, record["interval"], record["seed"]).name
            if name not in done_before:
                board.finished(name, f"done {name} ({record['wall_s']:.0f} s)")
    records.sort(key=lambda r: (r["seed"], r["interval"]))
    meta = {
        "kind": "meta",
        "study": "convergence",
        "rule": asdict(rule),
        "intervals": K,
        "clustering": config.curriculum.clustering if config.objective.name in ("eps", "v", "x0") else "quantile",
        "objective": config.objective.name,
        "dataset": config.data.dataset,
        "model": f"{config.model.arch}-{config.model.preset}",
        "max_steps": config.train.max_steps,
        "batch_size": config.train.batch_size,
        "seeds": list(seeds),
        "workers": workers,
        "threads_per_job": threads,
        "wall_s": round(board.wall_s, 1),
        "cpu_s": round(board.cpu_s, 1),
        "runs_wall_s": round(sum(r["wall_s"] for r in records), 1),
    }
    write_convergence_outputs(out, meta, records, rule)
    return records
