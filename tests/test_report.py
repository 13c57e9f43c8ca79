"""The grid report on fabricated results: the verdict, its tables and figures (statistics: test_stats.py)."""

from __future__ import annotations

import json
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
                    | (
                        {"stage_changes": [[s, min(1 + s // 90, n_stages), "patience" if s < 200 else "cap"]]}
                        if n_stages > 1 and s % 90 == 0 and s // 90 < n_stages
                        else {"stage_changes": []}
                    )
                    for s in range(10, STEPS[-1] + 1, 10)
                ],
            )
            noise = 1 + 0.05 * np.sin(seed + 1.0)  # seed-to-seed spread, the same shape for every method
            dense = [
                {"step": st, "heldout_loss": noise / (1 + st / (100 * SCALE[method]))}
                | ({"excess_error_mean": noise / (2 + st / (100 * SCALE[method]))} if vectors else {})
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
        "grid_config": {"name": "fabricated", "methods": sorted({m for m, _ in fid}), "seeds": [0, 1]},
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
    fid = "fid in digits-classifier features"  # every FID names its feature space
    for header in (
        f"final {fid} (mean ± std)",
        f"Δ {fid} at step 400",
        "Holm p (Wilcoxon; t)",
        "speed-up to the baseline's 50%-budget held-out denoising loss (95% CI)",
        "stage changes by patience",
        "stage changes by cap",
    ):
        assert header in text
    assert f"the shipped digits classifier's features ({EXTRACTOR})" in text and "fid (" not in text
    # two seeds: a speed-up (2x by construction) but neither an interval nor a p-value
    assert "| `easy_to_hard` | 2.00x (—) | 2/2 | 0 | too few seeds (2) |" in text
    assert "No method's speed-up can be called significant: fewer than 5 paired seeds." in text
    # the last unlock at step 270 of the 400-step budget, on both seeds (stage changes at 90, 180, 270)
    assert "| `easy_to_hard` | 4 | 270 ± 0 | 68% | 2/2 | s0: 270, s1: 270 |" in text
    assert text.index("Speed-up: the dense") < text.index(f"Primary metric: {fid}")  # the dense curve comes first
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
    assert "`hard_to_easy` reaches the baseline's 50%-budget held-out denoising loss in 1.25x the steps" in text
    assert "fid (lower is better) | 20 | 20 | 20 |" not in text  # the nonfinite final is missing, not a number
    assert "(1/2 seeds)" in text
    assert "data:image/png;base64," in page.read_text()


def test_report_single_seed_no_weighting_no_curriculum(tmp_path):
    _fabricate(
        tmp_path, {("none", 0): [9.0, 7.0, 5.0, 4.0], ("random", 0): [8.0, 6.0, 4.0, 3.0]}, with_weighting_key=False
    )
    text = write_report(tmp_path)[0].read_text()
    assert "fewer than 5 paired seeds" in text and "`random` reaches the baseline's 50%-budget" in text
    assert "| `random` | 1.00x (—) | 0/1 | 0 | too few seeds (1) |" in text


def test_report_with_enough_seeds_gives_intervals_and_corrected_p(tmp_path):
    """Eight seeds of a method that needs half the steps: speed-up 2 with an interval around it and a p-value
    (eight, because Holm over the grid's three p-values needs the exact Wilcoxon minimum 2/2^8 = 0.008)."""
    fid = {(m, s): [100.0 - s, 50.0, 30.0, 20.0 + s] for m in ("none", "easy_to_hard") for s in range(8)}
    _fabricate(tmp_path, fid)
    text = write_report(tmp_path)[0].read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `easy_to_hard` | 2.00x ("))
    low, high = (float(x) for x in row.split("(")[1].split(")")[0].split("–"))
    assert low <= 2.0 <= high and "8/8" in row
    assert "by the Wilcoxon test: `easy_to_hard` (2.00x)." in text
    assert "By the paired t-test on log steps: `easy_to_hard` (2.00x)." in text
    assert "reaches the baseline's 50%-budget held-out denoising loss in 0.50x the steps" in text
    assert "smallest speed-up this grid could detect" in text


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
    assert intro < text.index("No method's speed-up") < text.index("## Speed-up")  # before everything else
    bullets = text[intro:].split("\n\n")[1].splitlines()
    assert len(bullets) == 4  # two methods x two weightings, one sentence each
    # the paper's curriculum first, in every weighting, then the others
    assert [b.split("`")[3] for b in bullets] == ["easy_to_hard", "easy_to_hard", "hard_to_easy", "hard_to_easy"]
    # final FID at step 400: baseline (20 + 22) / 2 = 21, easy_to_hard (10 + 25) / 2 = 17.5, hard_to_easy 41
    assert bullets[0] == (
        "- With `none`, `easy_to_hard` (the paper's curriculum) ended 17% better than the uniform baseline "
        "(fid in digits-classifier features 17.5 against 21 at step 400) and needed only 0.50x the baseline's steps "
        "to reach the baseline's 50%-budget held-out denoising loss; too few paired seeds for a p-value (fewer than 5)."
    )
    worse = "`hard_to_easy` ended 95% worse than the uniform baseline (fid in digits-classifier features 41 against 21"
    assert worse in bullets[2]


def test_plain_sentence_says_which_differences_are_significant(tmp_path):
    fid = {(m, s): [100.0 - s, 50.0, 30.0, 20.0 + s] for m in ("none", "easy_to_hard") for s in range(8)}
    _fabricate(tmp_path, fid)
    text = write_report(tmp_path)[0].read_text()
    sentence = next(line for line in text.splitlines() if line.startswith("- `easy_to_hard` (the paper's curriculum)"))
    # equal FIDs (level), twice as fast: only the speed difference can be significant
    assert "ended level with the uniform baseline" in sentence and "needed only 0.50x the baseline's steps" in sentence
    assert "only the speed difference is significant after Holm's correction (paired Wilcoxon p" in sentence


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
    """verdict.json carries what the report's verdict table shows; the cross-grid summary quotes it (and
    refuses a folder without one in one line)."""
    from diffusion_curriculum.errors import UserError
    from diffusion_curriculum.experiments.report import summary_table

    fid = {(m, s): [100.0 - s, 50.0, 30.0, 20.0 + s] for m in ("none", "easy_to_hard") for s in range(8)}
    _fabricate(tmp_path / "a", fid, weightings=("none", "min_snr"))
    text = write_report(tmp_path / "a")[0].read_text()
    record = json.loads((tmp_path / "a" / "verdict.json").read_text())
    assert record["budget"] == 400 and record["holm_family"] == 6 and record["metric"] == "fid"
    rows = {(c["weighting"], c["method"]): c for c in record["comparisons"]}
    assert set(rows) == {("none", "easy_to_hard"), ("min_snr", "easy_to_hard")}
    c = rows["none", "easy_to_hard"]
    assert c["speedup"] == pytest.approx(2.0, rel=0.01) and (c["faster"], c["pairs"], c["censored"]) == (8, 8, 0)
    low, high = c["speedup_ci"]
    assert f"{c['speedup']:.2f}x ({low:.2f}–{high:.2f})" in text  # the report's own numbers
    assert c["final"]["diff"] == pytest.approx(0.0) and c["final"]["step"] == 400
    assert set(c["holm"]) == {f"{part}_{t}" for part in ("speed", "final", "mid") for t in "wt"}
    assert 0 < c["holm"]["speed_w"] <= 1

    _fabricate(tmp_path / "b", FID)  # two seeds: no p-value
    write_report(tmp_path / "b")
    table = summary_table([tmp_path / "a", tmp_path / "b"]).splitlines()
    assert len(table) == 2 + 3 and all(line.count(" | ") == 7 for line in table)
    assert table[2].startswith(f"| `fabricated` (8) | `none` | `easy_to_hard` | 2.00x ({low:.2f}–{high:.2f}) | 8/8 |")
    assert table[4].startswith("| `fabricated` (2) | `none` | `easy_to_hard` | 2.00x (—) | 2/2 | none (2 seeds) |")
    with pytest.raises(UserError, match=r"no verdict\.json"):
        summary_table([tmp_path])


def test_compare_summary_prints_the_table_or_one_line_and_exit_code_2(tmp_path, capsys):
    from diffusion_curriculum.cli import main

    _fabricate(tmp_path / "a", FID)
    write_report(tmp_path / "a")
    capsys.readouterr()
    assert main(["compare", "--summary", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| grid | weighting | method | speed-up (95% CI) |") and len(out) == 3
    assert main(["compare", "--summary", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no verdict.json" in err[0]


def test_a_censored_pair_says_whose_seed_never_reached_the_target():
    """A censored baseline flatters the baseline, a censored method the method: the sentence names the side
    and the seeds (the digits verdict had one baseline seed that never reached the pooled target)."""
    from diffusion_curriculum.experiments.report.verdict import censoring
    from diffusion_curriculum.experiments.stats import speedup_to_target

    steps = list(range(20, 1001, 20))
    reaching = (steps, [1.0 / (1.0 + st / 100) for st in steps])
    flat = (steps, [1.0] * len(steps))
    baseline = {0: flat, 1: reaching, 2: reaching, 3: reaching, 4: reaching}
    method = {0: reaching, 1: reaching, 2: flat, 3: flat, 4: reaching}
    speed = speedup_to_target(baseline, method, True, budget=1000)
    assert speed["censored"] == 3
    assert censoring(speed) == (
        "the method never reached the target on seeds 2, 3; the baseline never reached the target on seed 0, "
        "counted at the budget"
    )
    only_baseline = speedup_to_target(baseline, {s: reaching for s in range(5)}, True, budget=1000)
    assert censoring(only_baseline) == "the baseline never reached the target on seed 0, counted at the budget"


def test_compare_summary_plot_draws_every_interval_and_refuses_bad_paths(tmp_path, capsys):
    from diffusion_curriculum.cli import main
    from diffusion_curriculum.experiments.report import plot_summary

    fid = {(m, s): [100.0 - s, 50.0, 30.0, 20.0 + s] for m in ("none", "easy_to_hard") for s in range(8)}
    _fabricate(tmp_path / "a", fid, weightings=("none", "min_snr"))
    _fabricate(tmp_path / "few", FID)  # too few seeds for an interval
    for grid in ("a", "few"):
        write_report(tmp_path / grid)
    record = json.loads((tmp_path / "a" / "verdict.json").read_text())
    rows = plot_summary([tmp_path / "few", tmp_path / "a"], tmp_path / "forest.png")
    expected = [(c["speedup"], *c["speedup_ci"]) for c in record["comparisons"]]
    assert len(rows) == len(expected) == 2 and [r[1:] for r in rows] == [pytest.approx(e) for e in expected]
    assert all(r[2] <= r[1] <= r[3] for r in rows)
    assert [r[0] for r in rows] == [
        f"{record['name']} (8)  {c['weighting']}  {c['method']}" for c in record["comparisons"]
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
