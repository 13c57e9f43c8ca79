"""Comparison statistics (steps to reach, speed-ups, paired tests) and the grid report on fabricated results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import binomtest, ttest_rel

from diffusion_curriculum.experiments.report import write_report
from diffusion_curriculum.experiments.stats import (
    mean_std,
    paired_comparison,
    sign_test,
    speedups,
    steps_to_reach,
)

STEPS = [100, 200, 300, 400]


# ----- steps to reach and speed-ups ---------------------------------------------------------------
def test_steps_to_reach_both_directions_and_missing_values():
    assert steps_to_reach(STEPS, [9.0, 5.0, 3.0, 2.0], 5.0, lower_is_better=True) == 200
    assert steps_to_reach(STEPS, [9.0, 5.0, 3.0, 2.0], 1.0, lower_is_better=True) is None
    assert steps_to_reach(STEPS, [0.1, 0.5, 0.7, 0.9], 0.7, lower_is_better=False) == 300
    assert steps_to_reach(STEPS, [None, math.nan, 3.0, 2.0], 5.0, lower_is_better=True) == 300
    assert steps_to_reach([300, 100, 200], [1.0, 9.0, 4.0], 5.0, lower_is_better=True) == 200  # sorted by step


def test_speedup_half_the_steps_is_two_and_not_reached_is_counted():
    baseline = {0: (STEPS, [40.0, 30.0, 25.0, 20.0]), 1: (STEPS, [44.0, 34.0, 28.0, 22.0])}  # target 21, step 400
    method = {0: (STEPS, [30.0, 20.5, 15.0, 10.0]), 1: (STEPS, [50.0, 40.0, 30.0, 25.0])}
    s = speedups(baseline, method, lower_is_better=True)
    assert s["target"] == pytest.approx(21.0)
    assert s["baseline_steps"] == 400
    assert s["steps"] == [200, None]
    assert s["speedup"] == [2.0, None]
    assert (s["reached"], s["n"]) == (1, 2)
    assert s["mean"] == 2.0 and s["std"] is None  # one seed reached: no spread


def test_speedup_higher_is_better_with_spread():
    baseline = {0: (STEPS, [0.1, 0.3, 0.5, 0.8]), 1: (STEPS, [0.2, 0.4, 0.6, 0.6])}  # target 0.7; mean curve 0.7 at 400
    method = {0: (STEPS, [0.75, 0.8, 0.9, 0.9]), 1: (STEPS, [0.3, 0.71, 0.8, 0.9])}
    s = speedups(baseline, method, lower_is_better=False)
    assert s["baseline_steps"] == 400
    assert s["speedup"] == [4.0, 2.0]
    assert s["mean"] == 3.0 and s["std"] == pytest.approx(math.sqrt(2.0))
    assert s["steps_mean"] == 150.0


def test_speedup_baseline_steps_come_from_the_seed_mean_curve():
    # Finals 6 and 6: target 6; the seed-mean curve is [10, 6, 6, 6], so the baseline reaches it at 200, not 400.
    baseline = {0: (STEPS, [10.0, 5.0, 7.0, 6.0]), 1: (STEPS, [10.0, 7.0, 5.0, 6.0])}
    method = {0: (STEPS, [6.0, 6.0, 6.0, 6.0])}
    s = speedups(baseline, method, lower_is_better=True)
    assert s["target"] == 6.0 and s["baseline_steps"] == 200
    assert s["speedup"] == [2.0]


def test_speedup_baseline_seed_without_final_value_is_left_out():
    baseline = {0: (STEPS, [10.0, 8.0, 6.0, 4.0]), 1: (STEPS, [10.0, 8.0, 6.0, None])}
    s = speedups(baseline, {0: (STEPS, [5.0, 4.0, 3.0, 2.0])}, lower_is_better=True)
    assert s["target"] == 4.0 and s["baseline_steps"] == 400 and s["speedup"] == [2.0]


def test_speedup_without_a_baseline_value_reaches_nothing():
    s = speedups({0: (STEPS, [None] * 4)}, {0: (STEPS, [1.0] * 4)}, lower_is_better=True)
    assert s["target"] is None and s["speedup"] == [None] and s["reached"] == 0 and s["mean"] is None


def test_mean_std_uses_finite_values_and_sample_std():
    assert mean_std([1.0, 3.0, None, math.nan]) == (2.0, pytest.approx(math.sqrt(2.0)))
    assert mean_std([5.0]) == (5.0, None)
    assert mean_std([]) == (None, None)


# ----- paired tests -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("wins", "losses", "expected"),
    [(5, 0, 2 / 32), (4, 1, 2 * 6 / 32), (9, 1, 2 * 11 / 1024), (3, 3, 1.0), (1, 0, 1.0), (0, 2, 0.5)],
)
def test_sign_test_matches_hand_computed_binomial(wins, losses, expected):
    assert sign_test(wins, losses) == pytest.approx(expected)
    assert sign_test(wins, losses) == pytest.approx(binomtest(wins, wins + losses, 0.5).pvalue)


def test_paired_comparison_counts_wins_and_drops_ties():
    base = {0: 10.0, 1: 10.0, 2: 10.0, 3: 10.0, 4: 10.0, 5: 10.0}
    method = {0: 8.0, 1: 9.0, 2: 7.0, 3: 10.0, 4: 11.0, 5: 6.0, 6: 1.0}  # seed 6 has no baseline: not paired
    p = paired_comparison(base, method, lower_is_better=True)
    assert (p["n"], p["wins"], p["ties"], p["losses"]) == (6, 4, 1, 1)
    assert p["sign_p"] == pytest.approx(2 * 6 / 32)  # 4 wins of 5 non-tied
    assert p["mean_diff"] == pytest.approx((-2 - 1 - 3 + 0 + 1 - 4) / 6)
    seeds = range(6)
    expected = ttest_rel([method[s] for s in seeds], [base[s] for s in seeds]).pvalue
    assert p["t_p"] == pytest.approx(expected)
    higher = paired_comparison(base, method, lower_is_better=False)
    assert (higher["wins"], higher["losses"]) == (1, 4)


def test_paired_t_is_undefined_for_one_seed_or_constant_differences():
    assert paired_comparison({0: 1.0}, {0: 2.0}, True)["t_p"] is None
    constant = paired_comparison({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.5, 1: 1.5, 2: 2.5}, True)
    assert constant["t_p"] is None and constant["wins"] == 3 and constant["sign_p"] == pytest.approx(0.25)
    missing = paired_comparison({0: 1.0, 1: None}, {0: 0.5, 1: 0.1}, True)
    assert missing["n"] == 1 and missing["t_p"] is None


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
) -> None:
    """A grid folder as the runner leaves it: grid.json and, per run, metrics/eval logs and sample grids."""
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
                    for s in range(10, STEPS[-1] + 1, 10)
                ],
            )
            evals = []
            for i, (step, v) in enumerate(zip(STEPS, values, strict=True)):
                losses = [0.5 / (c + 1) / (i + 1) * (1.5 if method == "none" else 1.0) for c in range(4)]
                record: dict = {"step": step, "heldout_cluster_loss": losses, "n": 50, "seed": 0, "solver": "ddim"}
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
        "primary_metric": "sliced_wasserstein" if vectors else "fid",
        "lower_is_better": True,
        "runs": runs,
        "eval": {"every": 100, "n": 50, "steps": 25, "solver": "ddim", "seed": 0},
        "base_config": {"data": {"dataset": "digits"}, "train": {"max_steps": 400}},
        "grid_config": {"name": "fabricated", "methods": sorted({m for m, _ in fid}), "seeds": [0, 1]},
        "versions": {"diffusion_curriculum": "0.1.0", "torch": "2.13.0", "python": "3.11"},
        "machine": {"platform": "Linux", "processor": "x86_64", "cpu_count": 2, "gpu": None},
        "started": "2025-01-01T00:00:00+00:00",
        "finished": "2025-01-01T00:01:00+00:00",
        "wall_s": 60.0,
        "command": "diffusion-curriculum compare quick --out OUT",
    }
    (out / "grid.json").write_text(json.dumps(grid))


FID = {
    ("none", 0): [100.0, 50.0, 30.0, 20.0],
    ("none", 1): [110.0, 60.0, 35.0, 22.0],  # target 21, reached by the seed-mean curve at 400
    ("easy_to_hard", 0): [80.0, 20.5, 15.0, 10.0],  # reaches 21 at 200: speed-up 2
    ("easy_to_hard", 1): [120.0, 70.0, 40.0, 25.0],  # never reaches 21
}


def test_write_report_end_to_end(tmp_path):
    _fabricate(tmp_path, FID)
    md, page = write_report(tmp_path)
    assert md == tmp_path / "report.md" and page == tmp_path / "report.html"
    text, doc = md.read_text(), page.read_text()
    for header in ("final fid (mean ± std)", "speed-up (mean ± std)", "wins / seeds", "sign-test p", "paired t-test p"):
        assert header in text
    assert "not reached" in text and "2.00×" in text and "1/2" in text
    assert "(figures/primary.png)" in text and "(runs/easy_to_hard-none-s0/samples/step_00000400.png)" in text
    assert "```yaml" in text and "diffusion-curriculum compare quick" in text and "50 samples" in text
    assert "per-timestep view" in text.lower() and "handicapped" in text
    for name in ("primary", "metrics", "heldout_cluster_loss", "heldout_cluster_loss_ratio"):
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
    assert "anti-curriculum `hard_to_easy` ended worse than the baseline" in text
    assert "fid (lower is better) | 20 | 20 | 20 |" not in text  # the nonfinite final is missing, not a number
    assert "(1/2 seeds)" in text
    assert "data:image/png;base64," in page.read_text()


def test_report_single_seed_no_weighting_no_curriculum(tmp_path):
    _fabricate(
        tmp_path, {("none", 0): [9.0, 7.0, 5.0, 4.0], ("random", 0): [8.0, 6.0, 4.0, 3.0]}, with_weighting_key=False
    )
    text = write_report(tmp_path)[0].read_text()
    assert "single seed" in text and "Soonest to reach it: **random**" in text
    assert "| `random` | 1 | 3 | 3 | 300 | 1.33× | 1/1 |" in text


def test_report_weightings_and_vector_metrics(tmp_path):
    _fabricate(tmp_path, FID, weightings=("none", "min_snr"), vectors=True)
    md, page = write_report(tmp_path)
    text = md.read_text()
    assert "data:image/png;base64," in page.read_text()
    assert "final sliced_wasserstein (mean ± std)" in text and "With weighting `min_snr`" in text
    assert "| weighting |" in text and "`min_snr`" in text
    assert (tmp_path / "figures" / "excess_error.png").is_file()
    assert (tmp_path / "figures" / "excess_error_ratio.png").is_file()


def test_report_with_no_finished_run(tmp_path):
    _fabricate(tmp_path, FID, status={f"{m}-none-s{s}": "failed" for m, s in FID})
    text = write_report(tmp_path)[0].read_text()
    assert "0 of 4 runs finished (4 missing, listed below)" in text and "No run has a finite fid value" in text
