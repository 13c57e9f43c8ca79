"""The grid report on fabricated results: the verdict, its tables and figures (statistics: test_stats.py)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusion_curriculum.experiments.report import write_report

STEPS = [100, 200, 300, 400]
SCALE = {"none": 1.0, "easy_to_hard": 0.5, "hard_to_easy": 1.25, "random": 1.0, "learning_progress": 0.8}  # relative


# ----- the report on fabricated grid folders ------------------------------------------------------
def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _fabricate(
    out: Path,
    fid: dict[tuple[str, int], list[float]],
    *,
    weightings: tuple[str, ...] = ("none",),
    status: dict[str, str] | None = None,
    nonfinite: tuple[str, int] | None = None,
    vectors: bool = False,
    with_weighting_key: bool = True,
    scale: dict[tuple[str, int], float] | None = None,
    probe_vectors: bool = False,
    grid_config: dict | None = None,
) -> None:
    """A grid folder as the runner leaves it: grid.json and, per run, metrics/eval logs and sample grids.
    ``scale``: a run's step scale on the dense curve, in place of its method's SCALE (a run with scale k reaches
    the baseline's level at step 200 at step 200 k); ``probe_vectors``: probe records with an ``excess_error``
    per cluster (E2's input), each cluster proportional to the dense curve; ``grid_config``: keys set in
    grid.json's grid_config (its methods, its verdict)."""
    scale = scale or {}
    status = status or {}
    runs = []
    rng = np.random.default_rng(0)
    for w in weightings:
        for (method, seed), values in fid.items():
            name = f"{method}-{w}-s{seed}"
            run = out / "runs" / name
            (run / "samples").mkdir(parents=True)
            entry = {"name": name, "method": method, "seed": seed, "dir": f"runs/{name}"}
            entry.update(status=status.get(name, "done"), wall_s=12.5)
            if with_weighting_key:
                entry["weighting"] = w
            runs.append(entry)
            n_stages = 1 if method == "none" else 4
            _write_jsonl(
                run / "metrics.jsonl",
                [
                    {
                        "step": s,
                        "loss": 0.1,
                        "stage": min(1 + s // 90, n_stages),
                        "n_stages": n_stages,
                        "lr": 1e-3,
                        "images_per_s": 500.0,
                        "unlocked": [[0, 10]],
                        "cluster_loss": [0.1] * 4,
                    }
                    | (
                        {"stage_changes": [[s, min(1 + s // 90, n_stages), "patience" if s < 200 else "cap"]]}
                        if n_stages > 1 and s % 90 == 0 and s // 90 < n_stages
                        else {"stage_changes": []}
                    )
                    for s in range(10, STEPS[-1] + 1, 10)
                ],
            )
            noise = 1 + 0.05 * np.sin(seed + 1.0)  # seed-to-seed spread, the same shape for every method
            k = scale.get((method, seed), SCALE.get(method, 1.0))
            dense = [
                {"step": st, "heldout_loss": noise / (1 + st / (100 * k))}
                | ({"excess_error_mean": noise / (2 + st / (100 * k))} if vectors else {})
                | (
                    {"excess_error": [(c + 1) * noise / (1 + st / (100 * k)) for c in range(4)]}
                    if probe_vectors
                    else {}
                )
                for st in range(20, STEPS[-1] + 1, 20)
            ]
            _write_jsonl(run / "probe.jsonl", dense)
            evals = []
            for i, (step, v) in enumerate(zip(STEPS, values, strict=True)):
                losses = [0.5 / (c + 1) / (i + 1) * (1.5 if method == "none" else 1.0) for c in range(4)]
                record: dict = {"step": step, "heldout_cluster_loss": losses, "n": 50, "seed": 0, "solver": "ddim"}
                record["extractor"] = "exact" if vectors else EXTRACTOR
                if nonfinite == (name, step):
                    record["nonfinite_samples"] = 3
                elif vectors:
                    record.update(sliced_wasserstein=v, nll=v * 2, mmd=v / 10)
                    record.update(excess_error=[x / 3 for x in losses], excess_error_mean=sum(losses) / 12)
                else:
                    record.update(fid=v, kid=v / 100, kid_std=0.001, precision=0.5 + i / 10, recall=0.4 + i / 10)
                evals.append(record)
            _write_jsonl(run / "eval.jsonl", evals)
            for step in (200, 400):
                pixels = rng.integers(0, 255, (20, 20), dtype=np.uint8)
                Image.fromarray(pixels, mode="L").save(run / "samples" / f"step_{step:08d}.png")
    grid = {
        "name": "fabricated",
        "budget": 400,
        "dense_every": 20,
        "target_fraction": 0.5,
        "primary_metric": "sliced_wasserstein" if vectors else "fid",
        "lower_is_better": True,
        "runs": runs,
        "eval": {"every": 100, "n": 50, "steps": 25, "solver": "ddim", "seed": 0},
        "base_config": {"data": {"dataset": "digits"}, "train": {"max_steps": 400}},
        "grid_config": {"name": "fabricated", "methods": sorted({m for m, _ in fid}), "seeds": [0, 1]}
        | (grid_config or {}),
        "versions": {"diffusion_curriculum": "0.1.0", "torch": "2.13.0", "python": "3.11"},
        "machine": {"platform": "Linux", "processor": "x86_64", "cpu_count": 2, "gpu": None},
        "started": "2025-01-01T00:00:00+00:00",
        "finished": "2025-01-01T00:01:00+00:00",
        "wall_s": 60.0,
        "command": "diffusion-curriculum compare quick --out OUT",
    }
    (out / "grid.json").write_text(json.dumps(grid))


EXTRACTOR = "digits-0123456789abcdef"  # as evaluation records name the shipped digits classifier
FID = {
    ("none", 0): [100.0, 50.0, 30.0, 20.0],  # its pair's target (E1): 50, its own FID at step 200
    ("none", 1): [110.0, 60.0, 35.0, 22.0],  # target 60
    ("easy_to_hard", 0): [80.0, 20.5, 15.0, 10.0],  # reaches 50 at step 127: speed-up 1.57 (E1_FID below)
    ("easy_to_hard", 1): [120.0, 70.0, 40.0, 25.0],  # reaches 60 at step 224: speed-up 0.894
}
FID8 = {(m, s): [100.0 - s, 50.0, 30.0, 20.0 + s] for m in ("none", "easy_to_hard") for s in range(8)}  # equal FIDs
# easy_to_hard's dense curve per seed of FID8: the baseline's at 1 / 0.4, 1 / 0.5, 1 / 0.6 times the step, so it
# reaches its seed's baseline level at step 200 at step 80, 100 or 120 (probes every 20 steps: no interpolation)
SPREAD = {("easy_to_hard", s): (0.4, 0.5, 0.6)[s % 3] for s in range(8)}
SPREAD_LOGS = [math.log(1 / SPREAD["easy_to_hard", s]) for s in range(8)]  # log(200 / (200 k)) per pair
SPREAD_SPEEDUP = math.exp(statistics.fmean(SPREAD_LOGS))  # (2.5^3 2^3 (5/3)^2)^(1/8) = 2.08
NO_P = "no p-value: too few pairs (2 < 5)"
SAME = "no p-value: every pair's difference is the same (up to rounding): the t-test is undefined"
LOSS = "L_simple (held-out denoising loss)"


def _crossing(s0: float, s1: float, v0: float, v1: float, target: float) -> float:
    """The step at which a falling sample metric crosses ``target`` between evaluations (s0, v0) and (s1, v1):
    log-log interpolation, as E1 reads it."""
    return s0 * (s1 / s0) ** (math.log(v0 / target) / math.log(v0 / v1))


# E1 of FID's easy_to_hard, per pair: each seed's own baseline FID at step 200 (50 and 60, where the baseline reaches
# it: 200 steps); seed 0 crosses 50 between 80 (step 100) and 20.5 (200), seed 1 crosses 60 between 70 (200) and
# 40 (300)
E1_FID = (200 / _crossing(100, 200, 80.0, 20.5, 50.0), 200 / _crossing(200, 300, 70.0, 40.0, 60.0))  # 1.57, 0.894
E1_FID_SPEEDUP = math.sqrt(E1_FID[0] * E1_FID[1])  # 1.19
E1_FID_CELL = f"{E1_FID_SPEEDUP:.2f}x (range {E1_FID[1]:.2f}–{E1_FID[0]:.2f})"
# FID at the budget, method / baseline per seed: 10 / 20 and 25 / 22
FINAL_FID = (10 / 20, 25 / 22)
FINAL_FID_CELL = f"{math.sqrt(FINAL_FID[0] * FINAL_FID[1]):.3g}x (range {FINAL_FID[0]:.3g}–{FINAL_FID[1]:.3g})"


# hard_to_easy's dense curve is the baseline's at 1 / 1.25 the step: it reaches the level of step 200 (1 / 3 of the
# seed's noise) at 250, read between probes at 240 (1 / 2.92) and 260 (1 / 3.08), linear in the value and log in the
# step: 250.07
H2E_STEPS = 240 * (260 / 240) ** ((1 / 2.92 - 1 / 3) / (1 / 2.92 - 1 / 3.08))


def _t_p(logs: list[float]) -> float:
    """The paired t-test's p on per-pair log ratios derived by hand."""
    from scipy.stats import ttest_1samp

    return float(ttest_1samp(logs, 0.0).pvalue)


def test_write_report_end_to_end(tmp_path):
    _fabricate(tmp_path, FID)
    md, page = write_report(tmp_path)
    assert md == tmp_path / "report.md" and page == tmp_path / "report.html"
    text, doc = md.read_text(), page.read_text()
    fid = "fid in digits-classifier features"  # every FID names its feature space
    for header in (
        f"final {fid} (mean ± std)",
        f"| {LOSS} (primary): speed-up to the baseline's 50%-budget level | first / pairs | Holm p |",
        "| E1, sample quality (secondary): speed-up to the baseline's 50%-budget level | first / pairs "
        "| p (unadjusted) |",
        f"| {fid} at step 400: method / baseline (95% CI) |",
        "stage changes by patience",
        "stage changes by cap",
    ):
        assert header in text
    assert f"the shipped digits classifier's features ({EXTRACTOR})" in text and "fid (" not in text
    # two seeds: speed-ups (2x on the dense curve by construction, E1 per pair from the FIDs) with the pairs' range,
    # neither an interval nor a p-value
    assert (
        f"| `easy_to_hard` | 2.00x (range 2.00–2.00) | 2/2 | {NO_P} | {E1_FID_CELL} | 1/2 | {NO_P} | {FINAL_FID_CELL} |"
        in text
    )
    assert "but no primary p-value (fewer than 5 pairs, or no spread)" in text
    assert (
        "No method was shown faster or slower than uniform sampling on a primary endpoint after the correction." in text
    )
    # the last unlock at step 270 of the 400-step budget, on both seeds (stage changes at 90, 180, 270)
    # its runs have no config.yaml: the configured bound is a dash, the realised one is read from the log
    assert "| `easy_to_hard` | 4 | – | 270 ± 0 | 68% | 2/2 | s0: 270, s1: 270 |" in text
    assert text.index("## Speed-up on each endpoint") < text.index(f"Primary metric: {fid}")  # the speed-ups first
    assert "(figures/primary.png)" in text and "(figures/samples/easy_to_hard-none-s0_step_00000400.png)" in text
    assert "```yaml" in text and "diffusion-curriculum compare quick" in text and "50 samples" in text
    assert "per-timestep view" in text.lower()
    for name in ("dense", "primary", "metrics", "heldout_cluster_loss", "heldout_cluster_loss_ratio"):
        assert (tmp_path / "figures" / f"{name}.png").is_file()
    assert "data:image/png;base64," in doc
    assert '<img src="figures/' not in doc and 'src="runs/' not in doc and "<link" not in doc
    assert doc.count("<img ") == doc.count('<img src="data:image/png;base64,') >= 8


def test_per_cluster_ratio_table_at_the_last_step(tmp_path):
    _fabricate(tmp_path, FID)
    base = [0.5 / (c + 1) / 4 * 1.5 for c in range(4)]  # the baseline's last-step losses in _fabricate
    factors = [2.0, 8.0, 0.5, 0.5]
    for seed in (0, 1):
        path = tmp_path / "runs" / f"easy_to_hard-none-s{seed}" / "eval.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        records[-1]["heldout_cluster_loss"] = [b * f for b, f in zip(base, factors, strict=True)]
        _write_jsonl(path, records)
    text = write_report(tmp_path)[0].read_text()
    total = sum(b * f for b, f in zip(base, factors, strict=True)) / sum(base)  # 2.8 / 2.0833 = 1.344
    assert f"| easy_to_hard | 400 | 4 | 0.5 | {total:.4g} |" in text  # sqrt(2 * 8), sqrt(0.5 * 0.5)


def test_report_with_a_missing_run_and_a_nonfinite_evaluation(tmp_path):
    fid = {**FID, ("hard_to_easy", 0): [120.0, 90.0, 60.0, 40.0], ("hard_to_easy", 1): [130.0, 95.0, 70.0, 45.0]}
    _fabricate(tmp_path, fid, status={"easy_to_hard-none-s1": "failed"}, nonfinite=("none-none-s1", 400))
    md, page = write_report(tmp_path)
    text = md.read_text()
    assert "Missing runs" in text and "`easy_to_hard-none-s1`" in text and "status failed" in text
    steps = H2E_STEPS
    assert f"`hard_to_easy`: on {LOSS}, reaches the baseline's 50%-budget {LOSS} level in {steps / 200:.2f}x" in text
    assert f"| `hard_to_easy` | {200 / steps:.2f}x (range {200 / steps:.2f}–{200 / steps:.2f}) | 0/2 | {NO_P} |" in text
    # the failed run leaves easy_to_hard one pair, whose FID crosses seed 0's baseline level (50) as in FID
    assert (
        f"| `easy_to_hard` | 2.00x (range 2.00–2.00) | 1/1 | no p-value: too few pairs (1 < 5) | {E1_FID[0]:.2f}x"
        in text
    )
    assert "fid (lower is better) | 20 | 20 | 20 |" not in text  # the nonfinite final is missing, not a number
    assert "(1/2 seeds)" in text
    assert "data:image/png;base64," in page.read_text()


def test_report_single_seed_no_weighting_no_curriculum(tmp_path):
    _fabricate(
        tmp_path, {("none", 0): [9.0, 7.0, 5.0, 4.0], ("random", 0): [8.0, 6.0, 4.0, 3.0]}, with_weighting_key=False
    )
    text = write_report(tmp_path)[0].read_text()
    # random's dense curve is the baseline's (scale 1): 1x, a tie; its FID crosses the baseline's 7 (step 200)
    # between 8 (step 100) and 6 (step 200); at the budget 3 against 4
    e1, no_p = 200 / _crossing(100, 200, 8.0, 6.0, 7.0), "no p-value: too few pairs (1 < 5)"
    assert (
        "No method was shown faster or slower" in text
        and f"`random`: on {LOSS}, reaches the baseline's 50%-budget" in text
    )
    assert (
        f"| `random` | 1.00x (range 1.00–1.00) | 0/1 | {no_p} | {e1:.2f}x (range {e1:.2f}–{e1:.2f}) | 1/1 | {no_p} |"
        in text
    )
    assert f"| {no_p} | 0.75x (range 0.75–0.75) |" in text


def test_report_with_enough_seeds_gives_intervals_and_corrected_p(tmp_path):
    """Eight seeds of a method that needs 0.4-0.6 of the baseline's steps on the dense curve: its speed-up with an
    interval around it and the paired t-test's p (Holm over a family of one: the primary endpoint of one
    comparison); equal FIDs: E1 is exactly 1x on every pair, and a test of no spread gives no p, with why."""
    from diffusion_curriculum.experiments.stats import detectable_speedup

    _fabricate(tmp_path, FID8, scale=SPREAD)
    text = write_report(tmp_path)[0].read_text()
    geo = SPREAD_SPEEDUP
    row = next(line for line in text.splitlines() if line.startswith(f"| `easy_to_hard` | {geo:.2f}x ("))
    low, high = (float(x) for x in row.split("(")[1].split(")")[0].split("–"))
    assert 1 < low <= geo <= high and f"| 8/8 | {_t_p(SPREAD_LOGS):.3g} (t) |" in row
    assert f"| 1.00x (range 1.00–1.00) | 0/8 | {SAME} | 1x (range 1–1) |" in row
    assert "Holm's correction over 1 primary p-values" in text
    assert f"Shown after the correction: `easy_to_hard` faster on {LOSS}." in text
    ci = json.loads((tmp_path / "verdict.json").read_text())["comparisons"][0]["endpoints"]["loss"]["ci"]
    assert (
        f"reaches the baseline's 50%-budget {LOSS} level in {1 / geo:.2f}x the baseline's steps (speed-up {geo:.2f}x, "
        f"95% CI {ci[0]:.2f}–{ci[1]:.2f}x; first on 8/8 pairs)"
    ) in text
    # from the comparison's own spread (no A/A arm), at Holm's first-step alpha 0.05 / 1; E1 has no spread: none
    d = detectable_speedup(statistics.stdev(SPREAD_LOGS), 8, 0.05)
    assert (
        f"smallest speed-up this grid could detect (paired t-test on log steps at Holm's first-step α = 0.05, 80% "
        f"power, from the spread of paired log ratios): {d:.2f}x on {LOSS}, from the median paired spread of the "
        "comparisons."
    ) in text


def test_report_weightings_and_vector_metrics(tmp_path):
    _fabricate(tmp_path, FID, weightings=("none", "min_snr"), vectors=True)
    md, page = write_report(tmp_path)
    text = md.read_text()
    assert "data:image/png;base64," in page.read_text()
    assert "final sliced_wasserstein (mean ± std)" in text and "With `min_snr`:" in text
    assert "exact excess denoising error" in text  # the dense curve of mixture data
    assert "| weighting |" in text and "`min_snr`" in text
    assert (tmp_path / "figures" / "excess_error.png").is_file()
    assert (tmp_path / "figures" / "excess_error_ratio.png").is_file()


def test_report_with_no_finished_run(tmp_path):
    _fabricate(tmp_path, FID, status={f"{m}-none-s{s}": "failed" for m, s in FID})
    text = write_report(tmp_path)[0].read_text()
    assert "0 of 4 runs finished (4 missing, listed below)" in text and "No run has a finite fid value" in text


def test_where_the_samples_went_heat_map_from_logged_draws(tmp_path):
    """With the draws per cluster in metrics.jsonl (as the trainer logs them), the report shows a heat
    map of cluster share against step per method; the shares it draws are the logged ones."""
    from diffusion_curriculum.experiments.report.figures import _share_matrix
    from diffusion_curriculum.experiments.report.results import load_results

    _fabricate(tmp_path, {**FID, **{("learning_progress", s): FID[("none", s)] for s in (0, 1)}})
    for path in (tmp_path / "runs").glob("*/metrics.jsonl"):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        baseline = path.parent.name.startswith("none-")
        for r in records:
            r["cluster_draws"] = [4, 4, 4, 4] if baseline else [8, 4, 2, 2] if r["step"] > 200 else [2, 2, 4, 8]
        _write_jsonl(path, records)
    md = write_report(tmp_path)[0].read_text()
    assert "## Where the samples went" in md and (tmp_path / "figures" / "shares.png").is_file()
    grid = load_results(tmp_path)
    edges, shares = _share_matrix(list(grid.group("none", "learning_progress").values()), 400, 4)
    assert edges.tolist() == [0, 100, 200, 300, 400]
    assert np.allclose(shares, [[1 / 8, 1 / 8, 1 / 4, 1 / 2]] * 2 + [[1 / 2, 1 / 4, 1 / 8, 1 / 8]] * 2)
    assert np.allclose(_share_matrix(list(grid.group("none", "none").values()), 400, 4)[1], 0.25)


def test_no_share_heat_map_without_logged_draws(tmp_path):
    _fabricate(tmp_path, FID)
    assert "Where the samples went" not in write_report(tmp_path)[0].read_text()


# ----- what a newcomer reads first (issue #22) ------------------------------------------------------------------
def test_report_leads_with_one_plain_sentence_per_method_the_papers_curriculum_first(tmp_path):
    fid = {**FID, ("hard_to_easy", 0): [120.0, 90.0, 60.0, 40.0], ("hard_to_easy", 1): [130.0, 95.0, 70.0, 42.0]}
    _fabricate(tmp_path, fid, weightings=("none", "min_snr"))
    text = write_report(tmp_path)[0].read_text()
    intro = text.index("Against the uniform baseline (`none`), in plain words:")
    assert intro < text.index("No method was shown faster or slower") < text.index("## Speed-up")  # before the rest
    bullets = text[intro:].split("\n\n")[1].splitlines()
    assert len(bullets) == 4  # two methods x two weightings, one sentence each
    # the paper's curriculum first, in every weighting, then the others
    assert [b.split("`")[3] for b in bullets] == ["easy_to_hard", "easy_to_hard", "hard_to_easy", "hard_to_easy"]
    # on the primary endpoint (the dense curve): 2x by construction, hard_to_easy 200 / 250.07; two pairs, no p
    assert bullets[0] == (
        f"- With `none`, `easy_to_hard` (the paper's curriculum): {LOSS} 2.00x (range 2.00–2.00), not shown ({NO_P})."
    )
    slower = f"{200 / H2E_STEPS:.2f}x"
    assert bullets[2] == (
        f"- With `none`, `hard_to_easy`: {LOSS} {slower} (range {slower[:-1]}–{slower[:-1]}), not shown ({NO_P})."
    )
    # in detail, FID at step 400 as a ratio: geometric means sqrt(40 x 42) against sqrt(20 x 22), per seed 2 and 42 / 22
    detail = next(line for line in text.splitlines() if line.startswith("- With `none`: `hard_to_easy`: "))
    assert (
        f"At the end of the budget its fid in digits-classifier features is {math.sqrt(40 * 42):.4g} against "
        f"{math.sqrt(20 * 22):.4g} (geometric means; ratio {math.sqrt(2 * 42 / 22):.3g}, range {42 / 22:.3g}–2;"
    ) in detail


def test_plain_sentence_says_which_differences_are_significant(tmp_path):
    _fabricate(tmp_path / "spread", FID8, scale=SPREAD)
    text = write_report(tmp_path / "spread")[0].read_text()
    sentence = next(line for line in text.splitlines() if line.startswith("- `easy_to_hard` (the paper's curriculum)"))
    # faster on the primary endpoint (Holm over a family of one: the t-test's p), the interval above 1x
    low, high = json.loads((tmp_path / "spread" / "verdict.json").read_text())["comparisons"][0]["endpoints"]["loss"][
        "ci"
    ]
    assert low > 1 and sentence == (
        f"- `easy_to_hard` (the paper's curriculum): {LOSS} {SPREAD_SPEEDUP:.2f}x ({low:.2f}–{high:.2f}), faster "
        f"(Holm p {_t_p(SPREAD_LOGS):.3g})."
    )
    # equal FIDs: on E1 and at the budget exactly level on every pair, a difference no test can call significant
    detail = next(line for line in text.splitlines() if line.startswith("- `easy_to_hard`: "))
    assert (
        "on E1, sample quality, reaches the baseline's 50%-budget E1, sample quality level in 1.00x the baseline's "
        "steps (speed-up 1.00x, no interval below 5 pairs or without spread; the 8 pairs' speed-ups range 1.00–1.00x; "
        "first on 0/8 pairs) (secondary, paired "
        f"t-test on log steps, unadjusted p {SAME})"
    ) in detail
    both = math.exp(statistics.fmean(math.log(20.0 + s) for s in range(8)))  # geometric mean of 20..27
    assert (
        f"is {both:.4g} against {both:.4g} (geometric means; ratio 1, range 1–1; secondary, unadjusted p {SAME})"
        in detail
    )
    # exactly 2x on every pair (SCALE 0.5, one curve shape for every seed): no spread, so no p and no "faster"
    _fabricate(tmp_path / "exact", FID8)
    text = write_report(tmp_path / "exact")[0].read_text()
    sentence = next(line for line in text.splitlines() if line.startswith("- `easy_to_hard` (the paper's curriculum)"))
    assert sentence == f"- `easy_to_hard` (the paper's curriculum): {LOSS} 2.00x (range 2.00–2.00), not shown ({SAME})."


def test_ratio_heat_map_is_scaled_to_the_final_step():
    """Early ratios of 16 (a locked cluster) must not set the colour scale: the final ratios of 1.03-1.17 do."""
    from diffusion_curriculum.experiments.report.figures import ratio_colour_limit

    early = np.log2(np.array([[16.0, 1 / 16, 16.0], [8.0, 1.0, 0.25]]))
    final = np.log2(np.array([[1.03, 1.17, 1 / 1.1]]))
    assert ratio_colour_limit([np.vstack([early, final])]) == pytest.approx(np.log2(1.17))
    assert ratio_colour_limit([np.vstack([early, np.zeros((1, 3))])]) == 0.02  # a floor: equal is white
    assert ratio_colour_limit([np.vstack([early, [[np.nan, np.log2(1.05), 0.0]]])]) == pytest.approx(np.log2(1.05))


def test_heat_map_caption_gives_the_colour_range(tmp_path):
    _fabricate(tmp_path, FID)
    text = write_report(tmp_path)[0].read_text()
    # easy_to_hard's last-step losses are 1 / 1.5 of the baseline's in every cluster: the scale is 0.667-1.5
    assert "The colour scale (logarithmic) spans ratios 0.667 to 1.5, the largest at the last evaluated step" in text


def test_sample_grids_are_enlarged_with_nearest_neighbour(tmp_path):
    _fabricate(tmp_path, FID)
    write_report(tmp_path)
    small = np.array(Image.open(tmp_path / "runs" / "none-none-s0" / "samples" / "step_00000400.png"))
    big = np.array(Image.open(tmp_path / "figures" / "samples" / "none-none-s0_step_00000400.png"))
    factor = -(-512 // small.shape[1])  # 20 pixels across: 26 times, 520 pixels
    assert big.shape == (20 * factor, 20 * factor)
    assert np.array_equal(big, np.kron(small, np.ones((factor, factor), dtype=np.uint8)))  # every pixel a square


def test_throughput_is_labelled_as_machine_load_and_cpu_time_is_given(tmp_path):
    _fabricate(tmp_path, FID)
    info = json.loads((tmp_path / "grid.json").read_text())
    (tmp_path / "grid.json").write_text(json.dumps({**info, "cpu_s": 5400.0}))
    text = write_report(tmp_path)[0].read_text()
    assert "| mean images/s (machine load, not the method) |" in text
    assert "CPU time 1:30:00 (its process and workers)" in text and "do not measure a method's cost" in text


def test_one_cluster_numbering_in_info_and_the_report(tmp_path, capsys):
    """`info` and the report number clusters alike: 0 is the least noise (the paper's C_1), as the code indexes them."""
    from diffusion_curriculum.cli import main

    assert main(["info", "--clusters", "4"]) == 0
    info = capsys.readouterr().out
    assert "cluster 0 = least noise (hardest) ... cluster 3 = most noise (easiest)" in info
    rows = info.split("clusters (timesteps;")[1].splitlines()[2:6]
    assert [r.split()[:3] for r in rows] == [
        ["0", "[0,", "250)"],
        ["1", "[250,", "500)"],
        ["2", "[500,", "750)"],
        ["3", "[750,", "1000)"],
    ]
    _fabricate(tmp_path, FID)
    text = write_report(tmp_path)[0].read_text()
    assert "(cluster 0 = least noise)" in text and "(0 = least noise)" in text and "C_1" not in text


def test_verdict_json_holds_the_reports_numbers_and_the_summary_table_reads_them(tmp_path):
    """verdict.json (format 2) carries what the report's verdict table shows, per endpoint; the cross-grid summary
    quotes it, and refuses a folder without one, or with a verdict of the earlier format, in one line."""
    from diffusion_curriculum.errors import UserError
    from diffusion_curriculum.experiments.report import summary_table

    _fabricate(tmp_path / "a", FID8, weightings=("none", "min_snr"), scale=SPREAD)
    text = write_report(tmp_path / "a")[0].read_text()
    record = json.loads((tmp_path / "a" / "verdict.json").read_text())
    assert record["format"] == 2 and record["budget"] == 400 and record["metric"] == "fid"
    assert record["primary"] == ["loss"] and list(record["endpoints"]) == ["loss", "e1"]
    # one primary endpoint x two comparisons (easy_to_hard under each weighting): Holm over 2, first step 0.025
    assert record["holm_family"] == 2 and record["holm_alpha"] == pytest.approx(0.025)
    rows = {(c["weighting"], c["method"]): c for c in record["comparisons"]}
    assert set(rows) == {("none", "easy_to_hard"), ("min_snr", "easy_to_hard")}
    c = rows["none", "easy_to_hard"]
    loss, e1 = c["endpoints"]["loss"], c["endpoints"]["e1"]
    assert loss["kind"] == "estimate" and loss["primary"] and loss["test"] == "t"
    assert loss["speedup"] == pytest.approx(SPREAD_SPEEDUP) and loss["range"] == pytest.approx([5 / 3, 2.5])
    assert (loss["faster"], loss["n"], loss["censored_method"], loss["censored_baseline"], loss["dropped"]) == (
        8,
        8,
        0,
        0,
        0,
    )
    low, high = loss["ci"]
    assert f"| {SPREAD_SPEEDUP:.2f}x ({low:.2f}–{high:.2f}) | 8/8 |" in text  # the report's own numbers
    # the same pairs under each weighting: two equal p-values, each doubled by Holm
    assert loss["p"] == pytest.approx(2 * _t_p(SPREAD_LOGS))
    assert e1["kind"] == "estimate" and e1["speedup"] == pytest.approx(1.0) and not e1["primary"]
    assert e1["p"] is None and e1["p_reason"] == SAME[len("no p-value: ") :]
    assert c["final"]["effect"] == pytest.approx(1.0) and c["final"]["step"] == 400 and c["final"]["scale"] == "log"
    assert not c["paired_aa"]

    _fabricate(tmp_path / "b", FID)  # two seeds: no interval, no p-value
    write_report(tmp_path / "b")
    table = summary_table([tmp_path / "a", tmp_path / "b"]).splitlines()
    assert len(table) == 2 + 3 and all(line.count(" | ") == 6 for line in table)
    assert table[0] == (
        "| grid | weighting | method | E1, sample quality | E2, balanced denoising | L_simple "
        "| sample metric at the budget: method / uniform, or / the method it is against (95% CI) |"
    )
    assert table[2] == (
        f"| `fabricated` (8) | `none` | `easy_to_hard` | 1.00x (range 1.00–1.00); 0/8; p, secondary {SAME} | — "
        f"| {SPREAD_SPEEDUP:.2f}x ({low:.2f}–{high:.2f}); 8/8; Holm p {loss['p']:.3g} "
        f"| fid in digits-classifier features {math.exp(statistics.fmean(math.log(20.0 + s) for s in range(8))):.3g} "
        f"vs {math.exp(statistics.fmean(math.log(20.0 + s) for s in range(8))):.3g} (1x, range 1–1) |"
    )
    final = FINAL_FID_CELL.replace(" (", ", ")[:-1]  # "0.754x, range 0.5–1.14"
    assert table[4] == (
        f"| `fabricated` (2) | `none` | `easy_to_hard` | {E1_FID_CELL}; 1/2; p, secondary {NO_P} | — "
        f"| 2.00x (range 2.00–2.00); 2/2; Holm p {NO_P} "
        f"| fid in digits-classifier features {math.sqrt(10 * 25):.3g} vs {math.sqrt(20 * 22):.3g} ({final}) |"
    )
    with pytest.raises(UserError, match=r"no verdict\.json"):
        summary_table([tmp_path])
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "verdict.json").write_text(json.dumps({"comparisons": []}))  # format 1: no "format"
    with pytest.raises(UserError, match="earlier format") as refused:
        summary_table([tmp_path / "a", tmp_path / "old"])
    assert "\n" not in str(refused.value) and "--report-only" in str(refused.value)


def test_compare_summary_prints_the_table_or_one_line_and_exit_code_2(tmp_path, capsys):
    from diffusion_curriculum.cli import main

    _fabricate(tmp_path / "a", FID)
    write_report(tmp_path / "a")
    capsys.readouterr()
    assert main(["compare", "--summary", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| grid | weighting | method | E1, sample quality | E2, balanced denoising | L_simple |")
    assert len(out) == 3
    assert main(["compare", "--summary", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no verdict.json" in err[0]
    (tmp_path / "a" / "verdict.json").write_text(json.dumps({"comparisons": []}))  # a verdict of format 1
    assert main(["compare", "--summary", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "earlier format" in err[0]


BASE_FID = [100.0, 50.0, 30.0, 20.0]  # every seed's baseline FID below: its level at step 200 is 50, reached there
AA = {"name": "none", "label": "uniform_aa", "curriculum": {"sampler_stream": 1}}  # the paired A/A arm


def _censored_grid(out: Path) -> None:
    """Six seeds; easy_to_hard reaches each seed's baseline level on the dense curve and on FID in half the steps
    (step 100) on seeds 0-3, and never within the budget on seeds 4 and 5 (dense curve at 1 / 2.5 the baseline's
    step: the level of step 200 at step 500; FID never below 60)."""
    fid = {("none", s): BASE_FID for s in range(6)}
    fid |= {("easy_to_hard", s): [50.0, 30.0, 20.0, 15.0] if s < 4 else [100.0, 80.0, 70.0, 60.0] for s in range(6)}
    _fabricate(out, fid, scale={("easy_to_hard", s): 2.5 for s in (4, 5)})


def test_a_method_censored_on_some_seeds_is_a_bound_with_the_sign_test(tmp_path):
    """Censored runs count at the budget and make the speed-up a bound: "< ...x (bound)", no interval, no t-test
    but the sign test on who reached the target first; the sentence says the method never reached it, not that it
    reaches it."""
    _censored_grid(tmp_path)
    text = write_report(tmp_path)[0].read_text()
    # per pair: 200 / 100 on seeds 0-3, 200 / 400 (the budget) on 4 and 5: exp((4 log 2 - 2 log 2) / 6) = 2^(1/3);
    # the sign test on 4 pairs first against 2: 2 P(X >= 4 | 6, 1/2) = 2 (15 + 6 + 1) / 64; Holm over 1 p-value
    bound, p = f"< {2 ** (1 / 3):.2f}x (bound)", f"{2 * (15 + 6 + 1) / 64:.3g}"
    row = next(line for line in text.splitlines() if line.startswith("| `easy_to_hard` | <"))
    cells = f"{bound} | 4/6, 2 censored | {p} (sign test)"  # L_simple (primary, Holm p) and E1 (secondary)
    assert row.startswith(f"| `easy_to_hard` | {cells} | {cells} |")
    assert "(t)" not in row and "range" not in row.split(" | ")[1]  # neither a t-test nor an interval or range
    # FID at the budget, per seed 15 / 20 (seeds 0-3) and 60 / 20: geometric mean (0.75^4 3^2)^(1/6)
    assert row.split(" | ")[-1].startswith(f"{(0.75**4 * 3**2) ** (1 / 6):.3g}x (")
    record = json.loads((tmp_path / "verdict.json").read_text())["comparisons"][0]["endpoints"]["loss"]
    assert (record["kind"], record["ci"], record["test"], record["censored_method"]) == ("upper_bound", None, "sign", 2)
    assert record["p"] == pytest.approx(22 / 32)
    detail = next(line for line in text.splitlines() if line.startswith("- `easy_to_hard`: "))
    assert "reaches" not in detail and "paired t-test" not in detail and detail.count("never reached") == 2
    assert (
        f"on {LOSS}, the method never reached the baseline's 50%-budget {LOSS} level within the budget on 2 of 6 "
        f"pairs: speed-up {bound[:-8]}, a bound (those runs counted at the budget), with no interval; the method was "
        f"first on 4 and the baseline on 2 pairs (primary, sign test on who reached it first, Holm p {p})"
    ) in detail
    assert f"- `easy_to_hard` (the paper's curriculum): {LOSS} {bound}, not shown (Holm p {p})." in text


def test_a_pair_where_neither_run_reached_the_target_is_dropped_and_counted(tmp_path):
    """A baseline run whose dense curve has no value at the target step (it diverged) gives its pair no target:
    neither run reached it, the pair is dropped from that endpoint and counted, and the others make the estimate."""
    fid = {(m, s): BASE_FID for m in ("none", "easy_to_hard") for s in range(6)}
    _fabricate(tmp_path, fid, scale=SPREAD)
    path = tmp_path / "runs" / "none-none-s5" / "probe.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    _write_jsonl(path, [r | ({"heldout_loss": float("nan")} if r["step"] >= 160 else {}) for r in records])
    text = write_report(tmp_path)[0].read_text()
    logs = SPREAD_LOGS[:5]  # seeds 0-4: steps 80, 100, 120, 80, 100 against 200
    record = json.loads((tmp_path / "verdict.json").read_text())["comparisons"][0]["endpoints"]
    loss = record["loss"]
    assert (loss["kind"], loss["n"], loss["dropped"], loss["censored_method"], loss["censored_baseline"]) == (
        "estimate",
        5,
        1,
        0,
        0,
    )
    assert loss["speedup"] == pytest.approx(math.exp(statistics.fmean(logs))) and loss["p"] == pytest.approx(_t_p(logs))
    assert record["e1"]["n"] == 6 and record["e1"]["dropped"] == 0  # its FIDs are whole: E1 keeps the pair
    low, high = loss["ci"]
    assert (
        f"| `easy_to_hard` | {loss['speedup']:.2f}x ({low:.2f}–{high:.2f}) | 5/5, 1 dropped (neither reached) | "
        f"{_t_p(logs):.3g} (t) |"
    ) in text
    assert "first on 5/5 pairs); 1 pair(s) where neither run reached it left out (primary" in text


def test_the_paired_aa_arm_is_labelled_and_sets_the_detectable_speed_up(tmp_path):
    """A method defined in grid_config.methods as the baseline with another timestep stream is the paired A/A arm:
    labelled so in the table, the sentences (last) and the summary; the smallest detectable speed-up comes from its
    paired spread, at Holm's first-step alpha."""
    from diffusion_curriculum.experiments.report import summary_table
    from diffusion_curriculum.experiments.stats import detectable_speedup

    fid = {(m, s): BASE_FID for m in ("none", "easy_to_hard") for s in range(8)}
    # the A/A arm's FID: seeds 1 and 5 cross 50 a little early, seeds 2 and 6 a little late, the others as the baseline
    early, late = [100.0, 45.0, 30.0, 20.0], [100.0, 55.0, 45.0, 20.0]
    fid |= {("uniform_aa", s): {1: early, 2: late}.get(s % 4, BASE_FID) for s in range(8)}
    aa_scale = {("uniform_aa", s): (0.9, 1.1)[s % 2] for s in range(8)}  # the dense curve's level at step 180 or 220
    _fabricate(tmp_path, fid, scale=SPREAD | aa_scale, grid_config={"methods": ["none", "easy_to_hard", AA]})
    text = write_report(tmp_path)[0].read_text()
    record = json.loads((tmp_path / "verdict.json").read_text())
    rows = {c["method"]: c for c in record["comparisons"]}
    assert rows["uniform_aa"]["paired_aa"] and not rows["easy_to_hard"]["paired_aa"]
    assert record["holm_family"] == 2  # the primary endpoint of both comparisons: alpha 0.05 / 2 at the first step
    aa_loss = [math.log(200 / (200 * aa_scale["uniform_aa", s])) for s in range(8)]
    e1 = {
        1: math.log(200 / _crossing(100, 200, 100.0, 45.0, 50.0)),
        2: math.log(200 / _crossing(200, 300, 55.0, 45.0, 50.0)),
    }
    aa_e1 = [e1.get(s % 4, 0.0) for s in range(8)]
    assert rows["uniform_aa"]["endpoints"]["loss"]["speedup"] == pytest.approx(math.exp(statistics.fmean(aa_loss)))
    assert rows["uniform_aa"]["endpoints"]["e1"]["speedup"] == pytest.approx(math.exp(statistics.fmean(aa_e1)))
    row = next(line for line in text.splitlines() if line.startswith("| `uniform_aa` (paired A/A) |"))
    assert f"| {math.exp(statistics.fmean(aa_loss)):.2f}x (" in row and "| 4/8 |" in row and "| 2/8 |" in row
    bullets = [line for line in text.splitlines() if line.startswith("- `")]
    assert bullets[1].startswith(f"- `uniform_aa` (the paired A/A arm): {LOSS} ")  # the plain sentences: A/A last
    detail = next(line for line in bullets if line.startswith("- `uniform_aa` (the paired A/A arm: "))
    covered = all(c[0] <= 1 <= c[1] for c in (rows["uniform_aa"]["endpoints"][e]["ci"] for e in ("loss", "e1")))
    assert covered and "Its intervals cover 1x on all 2 endpoints with one, as an A/A check must" in detail
    found = [detectable_speedup(statistics.stdev(logs), 8, 0.05 / 2) for logs in (aa_loss, aa_e1)]
    assert (
        f"at Holm's first-step α = 0.025, 80% power, from the spread of paired log ratios): {found[0]:.2f}x on {LOSS}, "
        f"{found[1]:.2f}x on E1, sample quality, from the paired A/A arm."
    ) in text
    assert record["detectable_from"] == {"none": "the paired A/A arm"}
    assert (
        summary_table([tmp_path])
        .splitlines()[3]
        .startswith("| `fabricated` (8) | `none` | `uniform_aa` (paired A/A) |")
    )


def test_primary_endpoints_come_from_the_preset_and_set_the_holm_family(tmp_path):
    """grid_config.verdict.primary = [e1, e2] with per-cluster probe vectors: E1 and E2 are primary (Holm p, a family
    of 2 endpoints x 1 comparison), L_simple secondary with an unadjusted p."""
    fid = {("none", s): BASE_FID for s in range(8)}
    fid |= {("easy_to_hard", s): [50.0, 30.0, 20.0, 15.0] if s < 5 else BASE_FID for s in range(8)}
    _fabricate(
        tmp_path,
        fid,
        scale=SPREAD,
        probe_vectors=True,
        grid_config={"verdict": {"primary": ["e1", "e2"], "per_cluster": "excess_error"}},
    )
    text = write_report(tmp_path)[0].read_text()
    header = next(line for line in text.splitlines() if line.startswith("| method | E1"))
    assert header.startswith(
        "| method | E1, sample quality (primary): speed-up to the baseline's 50%-budget level | first / pairs | Holm p "
        "| E2, balanced denoising (primary): speed-up to the baseline's 50%-budget level | first / pairs | Holm p "
        f"| {LOSS} (secondary): speed-up to the baseline's 50%-budget level | first / pairs | p (unadjusted) |"
    )
    record = json.loads((tmp_path / "verdict.json").read_text())
    assert record["primary"] == ["e1", "e2"] and list(record["endpoints"]) == ["e1", "e2", "loss"]
    assert (
        record["holm_family"] == 2 and "Holm's correction over 2 primary p-values (its first step at α = 0.025)" in text
    )
    # E1: seeds 0-4 reach 50 at the first evaluation (step 100), seeds 5-7 are the baseline: 2x or 1x per pair
    # E2: every cluster's probe curve is the dense curve times (k + 1), so S(s) = log(dense(s) / dense_baseline(200))
    # and E2 reaches 0 where the dense curve reaches its level: the SPREAD pairs, as L_simple
    e1_logs, e2_logs = [math.log(2.0)] * 5 + [0.0] * 3, SPREAD_LOGS
    p1, p2 = _t_p(e1_logs), _t_p(e2_logs)
    holm = sorted([2 * min(p1, p2), max(2 * min(p1, p2), max(p1, p2))])  # Holm over two, monotone
    ends = record["comparisons"][0]["endpoints"]
    assert ends["e1"]["speedup"] == pytest.approx(2 ** (5 / 8)) and ends["e2"]["speedup"] == pytest.approx(
        SPREAD_SPEEDUP
    )
    assert sorted([ends["e1"]["p"], ends["e2"]["p"]]) == pytest.approx(holm)
    assert ends["e2"]["p"] == pytest.approx(2 * p2) and ends["e1"]["p"] == pytest.approx(p1)  # p2 < p1
    assert ends["loss"]["p"] == pytest.approx(p2) and not ends["loss"]["primary"]  # the same pairs, unadjusted
    row = next(line for line in text.splitlines() if line.startswith("| `easy_to_hard` |"))
    assert (
        f"| 5/8 | {p1:.3g} (t) |" in row and f"| 8/8 | {2 * p2:.3g} (t) |" in row and f"| 8/8 | {p2:.3g} (t) |" in row
    )
    sentence = next(line for line in text.splitlines() if line.startswith("- `easy_to_hard` (the paper's curriculum)"))
    assert (
        f": E1, sample quality {2 ** (5 / 8):.2f}x (" in sentence
        and f"; E2, balanced denoising {SPREAD_SPEEDUP:.2f}x (" in sentence
    )
    assert LOSS not in sentence  # a secondary endpoint stays out of the plain sentence
    assert (tmp_path / "figures" / "balanced.png").is_file()


def test_a_contrast_puts_two_methods_head_to_head_on_the_baselines_targets_inside_holms_family(tmp_path):
    """verdict.contrasts [[easy_to_hard, learning_progress]]: per seed, the steps learning_progress took to the
    baseline's level over the steps easy_to_hard took (80, 100 or 120 against 160 on the dense curve), tested and
    Holm-corrected with the family's comparison; learning_progress against the baseline stays outside the family."""
    from diffusion_curriculum.experiments.report.summary import summary_table

    fid = {(m, s): BASE_FID for m in ("none", "easy_to_hard", "learning_progress") for s in range(8)}
    _fabricate(
        tmp_path,
        fid,
        scale=SPREAD | {("learning_progress", s): 0.8 for s in range(8)},
        grid_config={
            "verdict": {
                "primary": ["loss"],
                "family": ["easy_to_hard"],
                "contrasts": [["easy_to_hard", "learning_progress"]],
            }
        },
    )
    text = write_report(tmp_path)[0].read_text()
    record = json.loads((tmp_path / "verdict.json").read_text())
    by = {(c["method"], c["against"]): c for c in record["comparisons"]}
    assert set(by) == {("easy_to_hard", "none"), ("learning_progress", "none"), ("easy_to_hard", "learning_progress")}
    contrast_logs = [math.log(0.8 / SPREAD["easy_to_hard", s]) for s in range(8)]  # log(160 / (200 k)) per pair
    head = by["easy_to_hard", "learning_progress"]["endpoints"]["loss"]
    assert head["speedup"] == pytest.approx(math.exp(statistics.fmean(contrast_logs))) and head["faster"] == 8
    p_family, p_contrast = _t_p(SPREAD_LOGS), _t_p(contrast_logs)
    low, high = sorted([p_family, p_contrast])
    assert record["holm_family"] == 2 and head["primary"]
    assert sorted([head["p"], by["easy_to_hard", "none"]["endpoints"]["loss"]["p"]]) == pytest.approx(
        [2 * low, max(2 * low, high)]
    )
    outside = by["learning_progress", "none"]["endpoints"]["loss"]
    assert not outside["primary"] and outside["speedup"] == pytest.approx(1 / 0.8)
    label = "`easy_to_hard` against `learning_progress`"
    row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    assert f"| {head['speedup']:.2f}x (" in row and "| 8/8 |" in row
    plain, detail = (line for line in text.splitlines() if line.startswith(f"- {label}"))
    assert plain.startswith(f"- {label}: L_simple") and "faster (Holm p" in plain
    assert "(head to head: the steps each took to the uniform baseline's level)" in detail
    assert "`learning_progress`'s steps" in detail and "the paper's curriculum" not in plain + detail
    assert "then head to head as the preset asks" in text
    assert any(label in line for line in summary_table([tmp_path]).splitlines())


def test_an_aa_arm_without_an_interval_is_not_said_to_miss_1x(tmp_path):
    """Two seeds of an A/A arm identical to the baseline (1.00x on every pair): no interval exists, so none can
    miss 1x; the report must not say that the instrument is off."""
    fid = {**FID, ("uniform_aa", 0): FID["none", 0], ("uniform_aa", 1): FID["none", 1]}
    _fabricate(tmp_path, fid, grid_config={"methods": ["none", "easy_to_hard", AA]})
    text = write_report(tmp_path)[0].read_text()
    assert "| `uniform_aa` (paired A/A) | 1.00x (range 1.00–1.00) | 0/2 |" in text
    assert "an A/A interval that misses 1x says the instrument, not a method, is off" not in text


def test_a_bound_is_not_called_slower_on_a_sign_test_that_favours_the_method():
    """Nine pairs where the method reaches the target at 190 steps against 200, one where it never does (counted at
    the budget, 400, against the baseline's 100): an upper bound exp((9 log(200/190) + log(100/400)) / 10) = 0.91x,
    and the sign test on 9 pairs first against 1, p = 2 x 11 / 1024 = 0.0215, significant in the method's favour.
    A test that favours the method cannot show it slower."""
    from diffusion_curriculum.experiments.report.verdict import decision
    from diffusion_curriculum.experiments.stats import speedup_from_pairs

    rows = [{"baseline_steps": 200.0, "steps": 190.0}] * 9 + [{"baseline_steps": 100.0, "steps": None}]
    r = speedup_from_pairs(rows, 400)
    assert r["kind"] == "upper_bound" and r["speedup"] == pytest.approx(
        math.exp((9 * math.log(200 / 190) + math.log(1 / 4)) / 10)
    )
    assert (r["faster"], r["slower"], r["test"]) == (9, 1, "sign") and r["p"] == pytest.approx(22 / 1024)
    assert decision(r, r["p"]) == "not shown"


def test_the_sentences_range_says_what_it_is_a_range_of(tmp_path):
    _fabricate(tmp_path, FID)
    text = write_report(tmp_path)[0].read_text()
    speedups = f"the 2 pairs' speed-ups range {E1_FID[1]:.2f}–{E1_FID[0]:.2f}x"  # 0.89–1.57, holding 1.19
    assert f"speed-up {E1_FID_SPEEDUP:.2f}x, no interval below 5 pairs" in text and speedups in text


def test_compare_summary_plot_draws_every_interval_and_refuses_bad_paths(tmp_path, capsys):
    from diffusion_curriculum.cli import main
    from diffusion_curriculum.experiments.report import plot_summary

    _fabricate(tmp_path / "a", FID8, weightings=("none", "min_snr"), scale=SPREAD)
    _fabricate(tmp_path / "few", FID)  # too few seeds for an interval
    _censored_grid(tmp_path / "censored")  # a bound: drawn as a triangle, with no interval
    for grid in ("a", "few", "censored"):
        write_report(tmp_path / grid)
    record = json.loads((tmp_path / "a" / "verdict.json").read_text())
    rows = plot_summary([tmp_path / "few", tmp_path / "a", tmp_path / "censored"], tmp_path / "forest.png")
    expected = [(c["endpoints"]["loss"]["speedup"], *c["endpoints"]["loss"]["ci"]) for c in record["comparisons"]]
    expected.append((2 ** (1 / 3),) * 3)  # the censored grid's bound, < 2^(1/3): low == high == the bound
    assert len(rows) == len(expected) == 3 and [r[1:] for r in rows] == [pytest.approx(e) for e in expected]
    assert all(r[2] <= r[1] <= r[3] for r in rows)
    assert [r[0] for r in rows] == [
        *(f"{record['name']} (8)  {c['weighting']}  {c['method']}  L_simple" for c in record["comparisons"]),
        "fabricated (6)  easy_to_hard  L_simple",
    ]
    with Image.open(tmp_path / "forest.png") as im:
        assert im.size[0] > 400 and im.size[1] > 100
    capsys.readouterr()
    assert main(["compare", "--summary", str(tmp_path / "a"), "--plot", str(tmp_path / "cli.png")]) == 0
    assert (tmp_path / "cli.png").stat().st_size > 1000
    nowhere = str(tmp_path / "no" / "x.png")
    for bad, needle in (
        (["--plot", str(tmp_path / "x.png")], "--plot"),
        (["--summary", str(tmp_path / "a"), "--plot", nowhere], "--plot"),
        (["--summary", str(tmp_path / "a"), "--plot", str(tmp_path / "x.pdf")], "--plot"),
        (["--summary", str(tmp_path / "few"), "--plot", str(tmp_path / "x.png")], "nothing to plot"),
    ):
        capsys.readouterr()
        assert main(["compare", *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.pdf").exists()


def test_the_noise_floor_sentence_gives_one_floor_or_the_range_of_the_seeds_splits():
    from diffusion_curriculum.experiments.report.sections import _noise_floor_text

    assert _noise_floor_text([]) == ""
    assert "is 0.9123:" in _noise_floor_text([0.91234])
    several = _noise_floor_text([0.85, 0.91, 1.02])
    assert "is 0.85 to 1.02 (one per training split):" in several and "0.91" not in several
