"""The study's outputs: study.jsonl (every number), PNG figures and study.md (the finding in one sentence).

study.md is built with the comparison report's document model (:mod:`..experiments.report.document`); the
convergence rule comes from :mod:`.rule`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..experiments.report.document import Block, BulletList, Heading, Image, Para, Table, to_markdown
from .rule import ConvergenceRule, convergence_step, smooth

__all__ = ["spearman", "write_convergence_outputs", "write_entropy_outputs"]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    rx, ry = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(v.size)
    ranks[order] = np.arange(v.size, dtype=float)
    for value in np.unique(v):  # ties share their mean rank
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _write_lines(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _span(interval: list) -> str:
    a, b = interval
    return f"[{a}, {b})" if isinstance(a, int) else f"[{a:.3g}, {b:.3g}]"


_MEASURE_LABELS = {
    "excess_error": "excess error over the analytic denoiser (held out)",
    "heldout_loss": "held-out loss",
}


# ----- convergence ------------------------------------------------------------------------------
def write_convergence_outputs(
    out: Path, meta: dict[str, Any], records: list[dict[str, Any]], rule: ConvergenceRule
) -> dict[str, Any]:
    """Apply the rule to every curve, aggregate over seeds, write study.jsonl, the two figures and study.md."""
    runs = []
    for r in records:
        found = convergence_step(np.array(r["steps"]), np.array(r["loss"]), rule)
        smoothed = smooth(np.array(r["loss"]), rule.window_for(len(r["loss"])))
        runs.append(
            {
                "kind": "run",
                **{k: r[k] for k in ("interval", "seed", "range", "measure", "heldout", "wall_s")},
                **found,
                "final_loss": found["plateau"],
                "steps": r["steps"],
                "loss": r["loss"],
                "normalized": (smoothed / r["loss"][0]).tolist(),
            }
        )
    K = meta["intervals"]
    summary = []
    for k in range(K):
        mine = [r for r in runs if r["interval"] == k]
        step_mean, step_std = _mean_std([r["converged_step"] for r in mine])
        loss_mean, loss_std = _mean_std([r["final_loss"] for r in mine])
        held_mean, held_std = _mean_std([r["heldout"] for r in mine])
        summary.append(
            {
                "kind": "interval",
                "interval": k,
                "range": mine[0]["range"],
                "seeds": len(mine),
                "converged_step_mean": step_mean,
                "converged_step_std": step_std,
                "final_loss_mean": loss_mean,
                "final_loss_std": loss_std,
                "measure": mine[0]["measure"],
                "heldout_mean": held_mean,
                "heldout_std": held_std,
            }
        )
    rho = spearman(np.arange(K), np.array([s["converged_step_mean"] for s in summary])) if K > 1 else float("nan")
    finding = _convergence_finding(summary, rho, len(meta["seeds"]))
    meta = {**meta, "spearman_interval_vs_steps": None if np.isnan(rho) else rho, "finding": finding}
    _write_lines(out / "study.jsonl", [meta, *summary, *runs])
    _plot_convergence(out / "convergence.png", summary, meta)
    _plot_curves(out / "loss_curves.png", runs, K)
    _convergence_markdown(out / "study.md", meta, summary, rule)
    return meta


def _convergence_finding(summary: list[dict], rho: float, n_seeds: int) -> str:
    first, last = summary[0], summary[-1]
    numbers = (
        f"steps to converge {first['converged_step_mean']:.0f} at cluster 0 (least noise, {_span(first['range'])}) "
        f"and {last['converged_step_mean']:.0f} at cluster {len(summary) - 1} (most noise, {_span(last['range'])}); "
        "Spearman "
        f"rho between interval and steps {rho:+.2f} over {len(summary)} intervals, {n_seeds} seed(s)"
    )
    if np.isnan(rho) or abs(rho) < 0.3:
        return f"No clear ordering of convergence speed by noise level here: {numbers}."
    if rho < 0:
        return f"Low timesteps (little noise) converged more slowly here: {numbers}."
    return f"Low timesteps did NOT converge more slowly here; high-noise intervals took longer: {numbers}."


def _plot_convergence(path: Path, summary: list[dict], meta: dict[str, Any]) -> None:
    k = np.arange(len(summary))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.errorbar(
        k,
        [s["converged_step_mean"] for s in summary],
        yerr=[s["converged_step_std"] for s in summary],
        fmt="o-",
        capsize=3,
    )
    ax1.set_xlabel("cluster (0 = least noise)")
    ax1.set_ylabel("steps to converge")
    ax1.set_title(f"convergence ({len(meta['seeds'])} seed(s), ±1 std)")
    ax2.errorbar(k, [s["heldout_mean"] for s in summary], yerr=[s["heldout_std"] for s in summary], fmt="o-", capsize=3)
    ax2.set_yscale("log")
    ax2.set_xlabel("cluster (0 = least noise)")
    ax2.set_ylabel(summary[0]["measure"].replace("_", " "))
    ax2.set_title("final model on its interval (held out)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.set_xticks(k if len(k) <= 20 else k[:: -(-len(k) // 20)])
    fig.suptitle(f"{meta['dataset']}, {meta['model']}, {meta['objective']}, {meta['max_steps']} steps per interval")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_curves(path: Path, runs: list[dict], K: int) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cmap = plt.get_cmap("viridis")
    for k in range(K):
        mine = [r for r in runs if r["interval"] == k]
        n = min(len(r["normalized"]) for r in mine)
        curve = np.mean([r["normalized"][:n] for r in mine], axis=0)
        ax.plot(mine[0]["steps"][:n], curve, color=cmap(k / max(1, K - 1)), lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("smoothed loss / first loss (mean over seeds)")
    ax.grid(alpha=0.3)
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, K - 1))
    fig.colorbar(mappable, ax=ax, label="cluster (0 = least noise)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _convergence_markdown(path: Path, meta: dict[str, Any], summary: list[dict], rule: ConvergenceRule) -> None:
    rows = [
        [
            str(s["interval"]),
            _span(s["range"]),
            f"{s['converged_step_mean']:.0f} ± {s['converged_step_std']:.0f}",
            f"{s['final_loss_mean']:.4g} ± {s['final_loss_std']:.2g}",
            f"{s['heldout_mean']:.4g} ± {s['heldout_std']:.2g}",
        ]
        for s in summary
    ]
    blocks: list[Block] = [
        Heading(1, "Convergence per timestep interval"),
        Para(meta["finding"]),
        Para(
            f"Data `{meta['dataset']}`, model `{meta['model']}`, objective `{meta['objective']}`, "
            f"{meta['intervals']} {meta['clustering']} intervals, {meta['max_steps']} steps at batch "
            f"{meta['batch_size']} per interval, seeds {meta['seeds']}; wall time {meta['wall_s']:.0f} s"
            + (f", CPU time {meta['cpu_s']:.0f} s" if "cpu_s" in meta else "")
            + f" (this invocation, {meta['workers']} worker(s); the CPU time counts the workers'); the runs took "
            f"{meta['runs_wall_s']:.0f} s in all (their own wall times summed, including any earlier invocation). "
            "Clusters are numbered from 0 (least noise, t near 0) up, as in `info`, `clusters` and the grid report."
        ),
        Para(
            f"Rule: centred moving average over {rule.window or '2% of the'} logged points; plateau = mean loss over "
            f"the last {rule.plateau_fraction:.0%} of the run; converged at the first step where the smoothed loss is "
            f"within {rule.tolerance:.0%} of the total drop from the plateau."
        ),
        Table(["cluster", "range", "steps to converge", "final loss", _MEASURE_LABELS[summary[0]["measure"]]], rows),
        Image(path.parent / "convergence.png", alt="convergence"),
        Image(path.parent / "loss_curves.png", alt="loss curves"),
    ]
    path.write_text(to_markdown(blocks, path.parent))


# ----- entropy ----------------------------------------------------------------------------------
_ESTIMATOR_LABELS = {
    "conditional": "E_x0 KL(q(x_{t-1}|x0) || q(x_t|x0)) (closed form)",
    "exact_mc": "KL(p_{t-1} || p_t), exact densities (Monte Carlo)",
    "gaussian": "KL of moment-matched Gaussians (closed form)",
    "empirical_mc": "KL of the training set's empirical marginals (Monte Carlo)",
}


def _finite(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def write_entropy_outputs(out: Path, meta: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Average each estimator over seeds, write study.jsonl, kl.png and study.md."""
    curves = {}
    for name in dict.fromkeys(r["estimator"] for r in records):
        mine = [r for r in records if r["estimator"] == name]
        kl = np.nanmean([_finite(r["kl"]) for r in mine], axis=0) if len(mine) > 1 else _finite(mine[0]["kl"])
        se = None
        if mine[0]["stderr"] is not None:
            se = np.sqrt(np.nansum([_finite(r["stderr"]) ** 2 for r in mine], axis=0)) / len(mine)
        curves[name] = (np.array(mine[0]["t"]), kl, se)
    findings = [_entropy_finding(name, *curves[name][:2]) for name in curves]
    marginal = next((n for n in ("exact_mc", "empirical_mc") if n in curves), "gaussian")
    headline = _entropy_headline(marginal, *curves[marginal][:2])
    meta = {**meta, "finding": headline, "findings": findings}
    _write_lines(out / "study.jsonl", [meta, *({"kind": "kl", **r} for r in records)])
    _plot_kl(out / "kl.png", curves, meta)
    blocks: list[Block] = [
        Heading(1, "Relative entropy between consecutive marginals"),
        Para(headline),
        BulletList(findings),
        Para(
            f"Data `{meta['dataset']}` ({meta['n_items']} training items, dimension {meta['dim']}), "
            f"{meta['beta_schedule']} schedule with T = {meta['T']}, seeds {meta['seeds']}, {meta['mc_samples']} Monte "
            f"Carlo draws per t; wall time {meta['wall_s']:.0f} s. Time is paper time: t = 0 is the data, the "
            "trainer's timestep i is t = i + 1."
        ),
        Image(out / "kl.png", alt="KL versus t"),
    ]
    (out / "study.md").write_text(to_markdown(blocks, out))
    return meta


def _entropy_finding(name: str, t: np.ndarray, kl: np.ndarray) -> str:
    ok = np.isfinite(kl)
    t, kl = t[ok], kl[ok]
    label = _ESTIMATOR_LABELS.get(name, name)
    if kl.size < 2:
        return f"`{name}` ({label}): fewer than two finite values."
    falling = float(np.mean(np.diff(kl) < 0))
    peak = int(t[int(np.argmax(kl))])
    return (
        f"`{name}` ({label}): {kl[0]:.3g} at t = {int(t[0])}, {kl[-1]:.3g} at t = {int(t[-1])}, "
        f"largest at t = {peak}; it falls from one evaluated t to the next at {falling:.0%} of them."
    )


def _entropy_headline(name: str, t: np.ndarray, kl: np.ndarray) -> str:
    """One sentence: is the marginal KL highest at the lowest timesteps?"""
    ok = np.isfinite(kl)
    t, kl = t[ok], kl[ok]
    peak = int(np.argmax(kl))
    numbers = f"by `{name}`, {kl[0]:.3g} nats at t = {int(t[0])} against {kl.max():.3g} at its peak t = {int(t[peak])}"
    where = "highest at the lowest timestep" if peak == 0 else "NOT highest at the lowest timesteps"
    return f"The relative entropy between consecutive marginals is {where} here ({numbers})."


def _plot_kl(path: Path, curves: dict[str, tuple], meta: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    shown = np.concatenate([kl[np.isfinite(kl) & (kl > 0)] for _, kl, _ in curves.values()])
    bottom, top = (shown.min() / 3, shown.max() * 3) if shown.size else (1e-12, 1.0)
    for name, (t, kl, se) in curves.items():
        ok = np.isfinite(kl) & (kl > 0)
        line = ax.plot(t[ok], kl[ok], "-" if se is None else "o-", ms=3, label=_ESTIMATOR_LABELS.get(name, name))[0]
        if se is not None:  # the band is cut at the axis: a Monte Carlo estimate can dip below zero
            ok = np.isfinite(kl)
            lo = np.clip(kl - 2 * se, bottom, None)
            ax.fill_between(t[ok], lo[ok], np.clip(kl + 2 * se, bottom, None)[ok], color=line.get_color(), alpha=0.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    ax.set_xlabel("t (0 = data)")
    ax.set_ylabel("relative entropy (nats)")
    ax.set_title(f"{meta['dataset']}: KL between consecutive marginals (bands: ±2 s.e.)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
