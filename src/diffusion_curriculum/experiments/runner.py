"""Run a comparison grid: train every run (in parallel worker processes, or as Slurm jobs), evaluate it at
its checkpoints, and write the report. A killed grid restarted with the same command skips finished
runs and resumes unfinished ones from their last checkpoint."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

from ..assembly import build_objective, build_sampler, check_pacing
from ..atomic import write_atomic
from ..errors import ConfigError, RunError
from ..jobs import DONE, check_claim, claim_folder, launch_jobs, mark_done
from ..metrics.directions import lower_is_better
from ..pacing import pacing_span
from ..progress import PROGRESS_DIR, JobPlan, ProgressBoard, reporting
from ..runs import checkpoints as ckpt
from ..runs import layout
from ..runs.lock import folder_lock
from ..runs.records import read_json
from ..samplers import TimestepSampler
from ..slurm import SLURM_DIR, SlurmOptions, check_cluster
from .grid import GridConfig, RunSpec, load_grid

__all__ = ["run_grid"]

# What a grid writes into its folder besides grid.yaml and runs/ (--overwrite deletes exactly these).
GRID_OUTPUTS = ("grid.json", "report.md", "report.html", "figures", PROGRESS_DIR, "evaluator", SLURM_DIR)
AUTO = "auto"  # eval.evaluator: auto: compare fits an evaluator on the grid's data into OUT/evaluator first


def listed(names: list[str], most: int = 5) -> str:
    """Names for a one-line message: all of a few, else the first ``most`` and how many more (a grid can leave
    a hundred runs unfinished, and a warning is read, not scrolled)."""
    if len(names) <= most:
        return ", ".join(names)
    return f"{', '.join(names[:most])} and {len(names) - most} more"


def _versions() -> dict[str, str]:
    import diffusers

    from .. import __version__

    return {
        "diffusion_curriculum": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
    }


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


# What the report says of an evaluator compare fitted itself (eval.evaluator: auto), from its manifest.
_FIT_SUMMARY = ("labelled", "heldout_accuracy", "heldout_reconstruction_mse", "fid_noise_floor", "fit_s", "n_train")


def _primary_metric(grid: GridConfig) -> tuple[str, bool]:
    """The sample-quality metric speed-ups are measured on, and whether lower is better."""
    if grid.primary_metric:
        return grid.primary_metric, lower_is_better(grid.primary_metric)
    from ..config import load_config

    dataset = load_config(overrides={"data.dataset": grid.base.get("data", {}).get("dataset", "digits")}).data.dataset
    vector = dataset in ("gmm", "toy2d", "8gaussians", "moons", "swiss_roll", "checkerboard")
    return ("sliced_wasserstein" if vector else "fid"), True


def run_one(
    grid_file: str, spec_name: str, out: str, threads: int, quiet: bool = True, inception_weights: str | None = None
) -> dict[str, Any]:
    """Train, evaluate and mark one run done; resumable at every point. Runs in a worker process.
    ``inception_weights`` (compare's --inception-weights) overrides the grid's eval.inception_weights."""
    from ..evaluation import EvalSettings, evaluate_run
    from ..training.trainer import train_or_resume

    torch.set_num_threads(threads)
    grid = load_grid(grid_file)
    spec = {s.name: s for s in grid.runs()}[spec_name]
    run_dir = Path(out) / "runs" / spec.name
    done = run_dir / DONE
    if done.is_file():
        return read_json(done, "record of a finished run (delete it to evaluate the run again)")
    config = grid.run_config(spec, run_dir)
    start = time.perf_counter()
    with reporting(Path(out) / PROGRESS_DIR / f"{spec.name}.json"):
        train_or_resume(config, progress=not quiet)
        settings = EvalSettings(
            n=grid.eval_n,
            seed=0,
            steps=grid.eval_steps,
            solver=grid.eval_solver,
            progress=not quiet,
            inception_weights=inception_weights or grid.eval_inception_weights,
            evaluator=str(Path(out) / "evaluator") if grid.eval_evaluator == AUTO else grid.eval_evaluator,
        )
        evaluate_run(run_dir, all_checkpoints=True, settings=settings)
    record = {
        "name": spec.name,
        "method": spec.method,
        "weighting": spec.weighting,
        "seed": spec.seed,
        "run_seed": config.seed,
        "dir": f"runs/{spec.name}",
        "status": "done",
        "wall_s": round(time.perf_counter() - start, 2),
    }
    mark_done(done, record)
    # The curve is in eval.jsonl now; keep only the newest checkpoint (enough to extend the run).
    ckpt.prune(run_dir / "checkpoints", keep=1)
    return record


def _threads_per_worker(n_workers: int) -> int:
    """Torch threads for each of ``n_workers`` local runs: the cores shared out, at most OMP_NUM_THREADS when it
    is set (on a machine shared with other work, more threads than free cores make OpenMP's threads spin-wait
    on each other, burning CPU for nothing). Of an OpenMP list ("4,2") the first level counts; a value that is
    not a positive integer is ignored, as OpenMP runtimes ignore it."""
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    cap = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if cap.isdigit() and int(cap) >= 1:
        threads = min(threads, int(cap))
    return threads


def _check_finished_run(grid: GridConfig, spec: RunSpec, run_dir: Path) -> None:
    """A finished run is used as it is, never trained again: refuse one made with another config than this
    grid gives it (a run folder copied in from another grid, as docs/experiments.md shares runs between grids,
    or its config.yaml edited). Its folder may have moved: its ``out``, and the folder of a source run it read
    (matched_marginal's ``from``) where that run has the same name, are not compared. A damaged done marker
    is named first."""
    read_json(run_dir / DONE, "record of a finished run (delete it to evaluate the run again)")
    expected = grid.run_config(spec, run_dir)
    saved = layout.load_run_config(run_dir).to_dict()
    params, ours = saved["curriculum"]["sampler_params"], expected.curriculum.sampler_params
    if "from" in params and "from" in ours and Path(params["from"]).name == Path(ours["from"]).name:
        params["from"] = ours["from"]
    difference = layout.config_difference(saved, expected, run_dir / layout.CONFIG, ignore=("out",))
    if difference is not None:
        raise RunError(
            f"{run_dir} is a finished run of another experiment ({difference}); move it out of "
            f"{run_dir.parent} or choose another --out"
        )


def _plan(grid: GridConfig, name: str, batch_size: int) -> JobPlan:
    """A run's work for the progress board: its training steps, then one evaluation per checkpoint (every
    ``eval.every`` steps and the last). Until one has been timed, an evaluation is taken to cost what sampling
    ``eval.n`` images in ``eval.steps`` forward passes does against a training step's forward and backward
    pass (about three forward passes) of ``batch_size`` items."""
    evaluations = grid.budget // grid.eval_every + (grid.budget % grid.eval_every > 0)
    cost = grid.eval_n * grid.eval_steps / (3 * batch_size)
    return JobPlan(name, (("train", grid.budget), ("evaluate", evaluations)), (("evaluate", cost),))


def _run_one_star(args: tuple) -> dict[str, Any]:
    return run_one(*args)


def _run_config_of(args: tuple) -> Any:
    """The training config of the run that ``_run_one_star(args)`` trains (for a Slurm job that trains it under
    torchrun)."""
    grid_file, spec_name, out = args[:3]
    grid = load_grid(grid_file)
    spec = {s.name: s for s in grid.runs()}[spec_name]
    return grid.run_config(spec, Path(out) / "runs" / spec.name)


def check_metrics(grid: GridConfig, inception_weights: str | None = None) -> None:
    """Refuse, in one line and before anything is trained or written, a grid whose image metrics could not be
    computed: image data with no shipped evaluator, no ``eval.evaluator`` and no Inception weights, an evaluator
    fitted on other data or at another resolution, or a weights file that is not there. Vector data is scored
    exactly and needs none."""
    from ..assembly import build_dataset
    from ..config import load_config
    from ..errors import UserError
    from ..metrics.evaluator import EVALUATOR_DATASETS
    from ..metrics.fitted import fit_hint, load_fitted_evaluator
    from .grid import _flatten

    config = load_config(overrides=_flatten(grid.base))
    weights = inception_weights or grid.eval_inception_weights
    dataset = config.data.dataset
    if grid.eval_evaluator is not None and weights is not None:
        raise UserError("eval.evaluator and Inception weights both given: choose one feature space")
    if weights is not None:
        if not Path(weights).expanduser().is_file():
            raise UserError(f"Inception weights {weights}: no such file")
        return
    if grid.eval_evaluator is None and dataset in EVALUATOR_DATASETS:
        return  # the shipped classifier's features
    if grid.eval_evaluator == AUTO:
        return  # fitted on this data by _auto_evaluator, once the folder is claimed
    evaluator = None if grid.eval_evaluator is None else load_fitted_evaluator(grid.eval_evaluator)
    data = build_dataset(config)
    if data.kind != "image":
        return
    if evaluator is None:
        raise UserError(
            f"grid {grid.name}: no feature space to score images of {dataset} in: fit an evaluator with "
            f"`{fit_hint(dataset, config.data.downsample)}` and set eval.evaluator: DIR in the grid "
            "(or eval.evaluator: auto, or pass --inception-weights PATH); nothing was trained"
        )
    evaluator.check_matches(dataset, data.shape, config.data.downsample)


def _phase_against_target(label: str, sampler: TimestepSampler, target: int) -> str | None:
    """A one-line warning for a method whose curriculum cannot, or may not, have every timestep in play by the
    step its endpoints are judged at (:func:`~..pacing.pacing_span`); None when it must, or for a method
    without a staged curriculum. A warning, not a refusal: a curriculum held back on purpose is a valid arm."""
    pacing = getattr(sampler, "pacing", None)
    if pacing is None or sampler.n_stages < 2:
        return None
    earliest, latest = pacing_span(pacing, sampler.n_stages - 1)
    if earliest > target:
        return (
            f"methods.{label}: its curriculum cannot have every timestep in play before the target step {target:,} "
            f"its endpoints are judged at (step {earliest:,} at the earliest): curriculum.budget_fraction bounds it"
        )
    if latest is None or latest > target:
        bound = "no step" if latest is None else f"step {latest:,}"
        return (
            f"methods.{label}: its curriculum may still be unlocking clusters at the target step {target:,} (its "
            f"stages are bounded by {bound}): curriculum.budget_fraction bounds it"
        )
    return None


def _keep_saved_launcher(saved: Path, text: str) -> None:
    """Where a grid's runs run (its ``launcher`` and ``slurm`` keys) is not what the grid is: a saved grid.yaml that
    differs from ``text`` only there is replaced by ``text`` (so that :func:`claim_folder` resumes it rather than
    refusing a different grid), which lets a longer time limit or another partition resume a grid."""
    if not saved.is_file():
        return
    try:
        old = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # claim_folder names a damaged file
    new = yaml.safe_load(text)
    if isinstance(old, dict) and isinstance(new, dict) and old != new:
        where = ("launcher", "slurm")
        if {k: v for k, v in old.items() if k not in where} == {k: v for k, v in new.items() if k not in where}:
            write_atomic(saved, text)


def _auto_evaluator(grid: GridConfig, out: Path, progress: bool) -> dict[str, Any] | None:
    """With ``eval.evaluator: auto``, the manifest of the evaluator fitted on the grid's data in OUT/evaluator:
    the one a restarted grid fitted before if it still matches the data, else a new fit. None otherwise, and for
    vector data (scored exactly)."""
    if grid.eval_evaluator != AUTO:
        return None
    from ..assembly import build_dataset
    from ..config import load_config
    from ..errors import UserError
    from ..metrics.fitted import fit_user_evaluator, load_fitted_evaluator
    from .grid import _flatten

    config = load_config(overrides=_flatten(grid.base))
    data = build_dataset(config)
    if data.kind != "image":
        return None
    folder = out / "evaluator"
    if (folder / "manifest.json").is_file():
        try:
            evaluator = load_fitted_evaluator(folder)
            evaluator.check_matches(config.data.dataset, data.shape, config.data.downsample)
            return evaluator.manifest
        except UserError:
            pass  # other data since, or a torn fit: fit again
    return fit_user_evaluator(
        config.data.dataset,
        out_dir=folder,
        downsample=config.data.downsample,
        on_bad_file=config.data.on_bad_file,
        overwrite=True,
        progress=progress,
    )


def run_grid(
    grid_file: str | Path,
    out: str | Path,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    command: str = "",
    inception_weights: str | None = None,
    launcher: str | None = None,
    slurm: dict[str, Any] | None = None,
    report_only: bool = False,
) -> Path:
    """Run (or finish) every run of a grid and write OUT/report.md and OUT/report.html. OUT is locked
    meanwhile: a second grid in it is refused. Every metric the grid needs is checked first
    (:func:`check_metrics`): a grid that could not be scored is refused before any run folder exists.

    ``launcher`` (default: the grid's ``launcher``, else ``local``) runs the unfinished runs in local worker
    processes or as one Slurm job each, with the grid's ``slurm`` options updated by ``slurm`` (the CLI's flags;
    a Slurm job's state is kept in OUT/slurm, so a restarted command re-attaches to its jobs). ``report_only``
    trains nothing and writes the report from the runs finished so far."""
    grid_file, out = Path(grid_file), Path(out)
    grid = load_grid(grid_file)
    launcher = launcher or grid.launcher
    options = grid.slurm.updated(key="", **(slurm or {}))
    if report_only:
        if not (out / "grid.yaml").is_file():
            raise RunError(f"--report-only: {out} holds no grid yet (run compare without --report-only first)")
        check_claim(out, "grid.yaml", "grid", False, GRID_OUTPUTS)
        with folder_lock(out):
            return _run_grid(grid, grid_file, out, workers, False, command, inception_weights, report_only=True)
    if launcher == "slurm":
        check_cluster(options)
    elif slurm:
        raise ConfigError(f"--{next(iter(slurm)).replace('_', '-')}: a Slurm option; add --launcher slurm")
    check_metrics(grid, inception_weights)
    check_claim(out, "grid.yaml", "grid", overwrite, GRID_OUTPUTS)  # before the lock: a refused folder is untouched
    with folder_lock(out):
        slurm_options = options if launcher == "slurm" else None
        return _run_grid(grid, grid_file, out, workers, overwrite, command, inception_weights, slurm_options)


def _run_grid(
    grid: GridConfig,
    grid_file: Path,
    out: Path,
    workers: int | None,
    overwrite: bool,
    command: str,
    inception_weights: str | None = None,
    slurm: SlurmOptions | None = None,
    *,
    report_only: bool = False,
) -> Path:
    """The grid itself, with ``out`` locked: its runs in local workers, or as Slurm jobs with ``slurm``'s options,
    or (``report_only``) none of them: the report of those finished."""
    text = grid_file.read_text()
    _keep_saved_launcher(out / "grid.yaml", text)
    claim_folder(out, "grid.yaml", text, "grid", overwrite, GRID_OUTPUTS, validate=load_grid)
    specs: list[RunSpec] = grid.runs()
    warnings: list[str] = []
    for spec in specs:  # validate every run's config before any training starts
        config = grid.run_config(spec, out / "runs" / spec.name, resolve=False)
        warning = check_pacing(config)
        if warning is not None and warning not in warnings:
            warnings.append(warning)
        if not spec.after:  # a sampler's parameters (those of a source-dependent one once its source is done)
            sampler = build_sampler(config, build_objective(config), rank=0)
            warning = _phase_against_target(spec.method, sampler, round(grid.target_fraction * grid.budget))
            if warning is not None and warning not in warnings:
                warnings.append(warning)
    for warning in warnings:
        print(f"diffusion-curriculum: warning: {warning}", file=sys.stderr)
    done_before = {s.name for s in specs if (out / "runs" / s.name / DONE).is_file()}
    for spec in specs:
        if spec.name in done_before:
            _check_finished_run(grid, spec, out / "runs" / spec.name)
    auto = _auto_evaluator(grid, out, progress=sys.stderr.isatty())
    if slurm is not None:  # every unfinished run at once, each with the CPUs its job asked for
        n_workers, threads = max(1, len(specs) - len(done_before)), slurm.cpus_per_run
    else:
        n_workers = max(1, min(workers or grid.workers, os.cpu_count() or 1, len(specs)))
        threads = _threads_per_worker(n_workers)
    metric, lower = _primary_metric(grid)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    records: dict[str, dict] = {}
    base_config = grid.run_config(specs[0], out / "runs" / specs[0].name)
    plans = [_plan(grid, s.name, batch_size=base_config.train.batch_size) for s in specs]
    board = ProgressBoard(f"grid {grid.name}", out / PROGRESS_DIR, plans, done_before, n_workers)
    # Runs that read another run's results (matched_marginal from a method of the grid) go in a second round.
    rounds = [[s for s in specs if not s.after], [s for s in specs if s.after]]
    if report_only:
        records = {n: read_json(out / "runs" / n / DONE, "record of a finished run") for n in sorted(done_before)}
        missing = [s.name for s in specs if s.name not in records]
        if not records:
            raise RunError(f"--report-only: no run of {out} has finished yet")
        if missing:
            warnings.append(f"a partial report: {len(missing)} of {len(specs)} runs unfinished ({listed(missing)})")
        specs = [s for s in specs if s.name in records]
    elif slurm is not None:
        where = f"as Slurm jobs ({slurm.cpus_per_run} CPU(s), {slurm.gpus_per_run} GPU(s) each)"
    else:
        where = f"{n_workers} worker(s) x {threads} thread(s)"
    with board:
        if not report_only:
            board.note(f"{len(specs)} runs ({len(done_before)} already done), {where}")
        for round_specs in [] if report_only else rounds:
            here = out.resolve()  # absolute paths: a Slurm job may start in another folder
            jobs = [(str(here / "grid.yaml"), s.name, str(here), threads, True, inception_weights) for s in round_specs]
            names = [s.name for s in round_specs]
            results = launch_jobs(
                _run_one_star,
                jobs,
                names,
                out,
                workers=n_workers,
                slurm=slurm,
                board=board,
                train_config=_run_config_of,
            )
            for record in results:
                records[record["name"]] = record
                if record["name"] not in done_before:
                    board.finished(record["name"], f"done {record['name']} ({record['wall_s']:.0f} s)")
    meta = {
        "name": grid.name,
        "primary_metric": metric,
        "lower_is_better": lower,
        "budget": grid.budget,
        "dense_every": grid.dense_every,
        "target_fraction": grid.target_fraction,
        "warnings": warnings,
        "runs": [records[s.name] for s in specs],
        "eval": {
            "every": grid.eval_every,
            "n": grid.eval_n,
            "steps": grid.eval_steps,
            "solver": grid.eval_solver,
            "seed": 0,
            "evaluator": "evaluator" if grid.eval_evaluator == AUTO else grid.eval_evaluator,
            "inception_weights": inception_weights or grid.eval_inception_weights,
            "evaluator_fitted": None if auto is None else {k: auto.get(k) for k in _FIT_SUMMARY},
        },
        "base_config": base_config.to_dict(),
        "grid_config": yaml.safe_load((out / "grid.yaml").read_text()),
        "versions": _versions(),
        "machine": _machine(),
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(board.wall_s, 1),
        "cpu_s": round(board.cpu_s, 1),
        "command": command or " ".join(sys.argv),
    }
    write_atomic(out / "grid.json", json.dumps(meta, indent=1))
    from .report import write_report

    md, _ = write_report(out)
    return md
