"""The comparison grid: the smoke preset end to end, kill-and-restart, and grid config errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from diffusion_curriculum.assembly import check_pacing
from diffusion_curriculum.config import ConfigError
from diffusion_curriculum.experiments import PRESETS, load_grid, preset_path

RUNS = ["none-none-s0", "none-none-s1", "easy_to_hard-none-s0", "easy_to_hard-none-s1"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _compare(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "diffusion_curriculum.cli", "compare", "--preset", "smoke", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _results(out: Path) -> dict:
    """Everything a grid's runs produced that must not depend on interruptions."""
    results = {}
    for name in RUNS:
        run = out / "runs" / name
        evals = [
            {k: v for k, v in json.loads(line).items() if k != "checkpoint"}
            for line in (run / "eval.jsonl").read_text().splitlines()
        ]
        metrics = [
            {k: v for k, v in json.loads(line).items() if k != "images_per_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()
        ]
        probes = (run / "probe.jsonl").read_text().splitlines()
        results[name] = (evals, metrics, probes)
    return results


@pytest.mark.slow
@pytest.mark.timeout(900)  # three small grids: ~40 s on an idle 2-core machine, minutes under load
def test_smoke_grid_writes_both_reports_and_survives_a_kill(tmp_path):
    clean = tmp_path / "clean"
    proc = _compare(clean)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "report.md" in stdout
    assert "1 worker(s) x 1 thread(s)" in stdout + stderr  # OMP_NUM_THREADS=1 caps the worker's threads
    md, html = (clean / "report.md").read_text(), (clean / "report.html").read_text()
    assert "easy_to_hard" in md and "data:image/png;base64," in html
    # the speed-up instrument: the dense curve first, then the table with intervals and corrected p-values
    assert md.index("## Speed-up on each endpoint") < md.index("## Primary metric")
    assert "L_simple (held-out denoising loss) (primary)" in md and "E1, sample quality (secondary)" in md
    assert (clean / "figures" / "dense.png").is_file() and (clean / "figures" / "balanced.png").is_file()
    assert all((clean / "runs" / name / "probe.jsonl").read_text().count("\n") == 4 for name in RUNS)
    grid = json.loads((clean / "grid.json").read_text())
    assert [r["name"] for r in grid["runs"]] == RUNS and all(r["status"] == "done" for r in grid["runs"])
    assert grid["primary_metric"] == "fid"

    # The same grid, killed as soon as its first run has finished, then restarted.
    killed = tmp_path / "killed"
    proc = _compare(killed)
    first_done = killed / "runs" / RUNS[0] / "done.json"
    deadline = time.time() + 300
    while not first_done.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert first_done.exists()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "report.md").exists()
    before = first_done.read_text()
    proc = _compare(killed)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "1 already done" in stdout + stderr
    assert first_done.read_text() == before  # not redone
    assert _results(killed) == _results(clean)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_is_a_valid_grid(name):
    grid = load_grid(preset_path(name))
    arms = len(grid.methods) + (grid.aa_seed_offset is not None)
    assert "none" in grid.methods and len(grid.runs()) == arms * len(grid.weightings) * len(grid.seeds)
    for spec in grid.runs():
        # adaptive pacing able to fire, or refused (a control paced by other runs: checked as its source)
        check_pacing(grid.run_config(spec, Path("/tmp/unused"), resolve=False))


def test_quick_preset_sets_the_papers_curriculum_and_the_recommended_sampler_beside_uniform():
    grid = load_grid(preset_path("quick"))
    assert grid.methods == ["none", "easy_to_hard", "loss_importance"] and len(grid.seeds) >= 5
    assert grid.base["data"]["dataset"] == "digits"


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        ({"metods": ["none"]}, "metods"),
        ({"methods": ["easy_to_hard"]}, "methods"),
        ({"methods": ["none", "sideways"]}, "methods"),
        ({"base": {"curriculum": {"order": "easy_to_hard"}}}, "base.curriculum.order"),
        ({"base": {"train": {"max_steps": -1}}}, "train.max_steps"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"eval": {"n": 10}}, "eval.every"),
        ({"weightings": ["nope"]}, "objective.weighting"),
        ({"verdict": {"primary": ["loss"], "family": ["sideways"]}}, "verdict.family"),
        ({"verdict": {"primary": ["loss"], "contrasts": [["easy_to_hard", "sideways"]]}}, "verdict.contrasts"),
        ({"verdict": {"primary": ["loss"], "contrasts": [["none", "easy_to_hard"]]}}, "verdict.contrasts"),
    ],
)
def test_bad_grid_files_name_the_key(tmp_path, edit, key):
    raw = yaml.safe_load(preset_path("smoke").read_text())
    raw.update(edit)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_grid(path)
    assert str(info.value).startswith(key)


def test_compare_cli_errors_exit_2(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("methods: [none]\nfoo: 1\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffusion_curriculum.cli",
            "compare",
            "--config",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "foo" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "diffusion_curriculum.cli", "compare", "--preset", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--preset" in proc.stderr


def test_aa_arm_pairs_disjoint_seeds_by_index():
    grid = load_grid(preset_path("aa"))
    specs = grid.runs()
    aa = [s for s in specs if s.method == "aa"]
    assert [s.seed for s in aa] == grid.seeds  # paired with the baseline's seeds by index ...
    assert [s.overrides["seed"] for s in aa] == [seed + grid.aa_seed_offset for seed in grid.seeds]  # ... disjoint
    assert all(s.overrides["curriculum.order"] == "none" for s in aa)
    assert not set(s.overrides["seed"] for s in aa) & set(grid.seeds)


def test_dense_cadence_and_target_fraction_are_validated(tmp_path):
    base = {"base": {"data": {"dataset": "gmm"}}, "methods": ["none"], "seeds": [0, 1]}
    for ev, key in (
        ({"every": 5, "dense_every": 0}, "eval.dense_every"),
        ({"every": 5, "target_fraction": 1.5}, "eval.target_fraction"),
    ):
        path = tmp_path / "g.yaml"
        path.write_text(yaml.safe_dump({**base, "eval": ev}))
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_grid(path)
    path.write_text(yaml.safe_dump({**base, "eval": {"every": 5}, "aa_seed_offset": 1}))
    with pytest.raises(ConfigError, match="aa_seed_offset"):
        load_grid(path)  # seeds 1, 2 would overlap the baseline's 0, 1


# ----- timestep samplers as methods ------------------------------------------------------------------
def _grid_file(tmp_path, **raw) -> Path:
    tree = {"base": {"data": {"dataset": "gmm"}, "model": {"arch": "mlp"}}, "seeds": [0, 1], "eval": {"every": 5}}
    tree.update(raw)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_grid_methods_are_orders_or_samplers_with_parameters_and_labels(tmp_path):
    methods = [
        "none",
        "easy_to_hard",
        "learning_progress",
        {"name": "learning_progress", "label": "lp_is", "importance_weights": True},
        {"name": "speed", "change_aware": False},
        {"name": "matched_marginal", "from": "easy_to_hard"},
    ]
    grid = load_grid(_grid_file(tmp_path, methods=methods))
    assert grid.methods == ["none", "easy_to_hard", "learning_progress", "lp_is", "speed", "matched_marginal"]
    specs = {s.name: s for s in grid.runs()}
    assert len(specs) == 12
    out = tmp_path / "out" / "runs"
    config = {name: grid.run_config(s, out / name) for name, s in specs.items()}
    none = config["none-none-s0"].curriculum
    assert (none.sampler, none.order) == ("curriculum", "none")
    assert config["easy_to_hard-none-s1"].curriculum.order == "easy_to_hard"
    lp_is = config["lp_is-none-s1"].curriculum
    assert (lp_is.sampler, lp_is.order) == ("learning_progress", "none")
    assert lp_is.sampler_params == {"importance_weights": True}
    assert config["speed-none-s0"].curriculum.sampler_params == {"change_aware": False}
    matched = specs["matched_marginal-none-s1"]
    assert matched.after == ("easy_to_hard-none-s1",)  # the source run of the same seed goes first
    assert config[matched.name].curriculum.sampler_params == {"from": str(out / "easy_to_hard-none-s1")}
    assert not any(s.after for s in specs.values() if s.method != "matched_marginal")


@pytest.mark.parametrize(
    ("methods", "key"),
    [
        (["none", {"name": "speed", "ratio": 2.0, "nope": 1}], "methods.speed.nope"),
        (["none", {"name": "easy_to_hard", "patience": 3}], "methods.easy_to_hard"),
        (["none", "speed", "speed"], "methods"),
        (["none", {"name": "speed", "label": "a-b"}], "methods"),
        (["none", {"label": "x"}], "methods"),
        (["none", {"name": "matched_marginal"}], "methods.matched_marginal"),
        (["none", {"name": "matched_marginal", "from": "hard_to_easy"}], "methods.matched_marginal.from"),
        (["none", {"name": "matched_marginal", "label": "m", "from": "m"}], "methods.m.from"),
        ([{"name": "speed", "label": "none"}], "methods"),
    ],
)
def test_bad_methods_name_the_key(tmp_path, methods, key):
    with pytest.raises(ConfigError) as info:
        load_grid(_grid_file(tmp_path, methods=methods))
    assert str(info.value).startswith(key), str(info.value)


def test_base_cannot_set_the_sampler(tmp_path):
    for section in ({"sampler": "speed"}, {"sampler_params": {"ratio": 2.0}}):
        path = _grid_file(tmp_path, methods=["none"], base={"data": {"dataset": "gmm"}, "curriculum": section})
        with pytest.raises(ConfigError, match=r"^base\.curriculum\.sampler"):
            load_grid(path)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_sampler_grid_runs_matched_marginal_after_its_source_and_reports_the_shares(tmp_path):
    """A tiny grid (gmm, 8 steps): the matched marginal trains on the time-averaged shares of the
    curriculum run of its seed, finished before it starts; the report shows where the samples went."""
    grid = _grid_file(
        tmp_path,
        base={
            "data": {"dataset": "gmm", "n_samples": 400},
            "model": {"arch": "mlp"},
            "curriculum": {"n_clusters": 3, "pacing": "fixed", "steps_per_stage": 2},
            "train": {"max_steps": 8, "batch_size": 16, "warmup_steps": 2, "sample_every": None},
        },
        methods=["none", "easy_to_hard", "learning_progress", {"name": "matched_marginal", "from": "easy_to_hard"}],
        seeds=[0],
        eval={"every": 4, "n": 40, "steps": 3, "dense_every": 2, "dense_items": 32},
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "diffusion_curriculum.cli", "compare", "--config", str(grid), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=800,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    source = out / "runs" / "easy_to_hard-none-s0"
    source_draws = [json.loads(line)["cluster_draws"] for line in (source / "metrics.jsonl").read_text().splitlines()]
    shares = [sum(col) / sum(map(sum, source_draws)) for col in zip(*source_draws, strict=True)]
    matched = out / "runs" / "matched_marginal-none-s0"
    params = yaml.safe_load((matched / "config.yaml").read_text())["curriculum"]["sampler_params"]
    assert params == {"from": str(source)}
    for line in (matched / "metrics.jsonl").read_text().splitlines():
        draws = json.loads(line)["cluster_draws"]
        assert all(abs(d - 16 * s) < 1 for d, s in zip(draws, shares, strict=True))
    assert (source / "done.json").stat().st_mtime <= (matched / "config.yaml").stat().st_mtime
    md = (out / "report.md").read_text()
    assert "## Where the samples went" in md and (out / "figures" / "shares.png").is_file()
    assert "matched_marginal" in md and "learning_progress" in md


def test_a_comment_added_to_a_grid_file_resumes_it_and_a_changed_value_is_another_grid(tmp_path):
    """claim_folder compares the YAML values, not the text: a preset whose comment now records a measured time
    still resumes its grid folder (and the folder keeps the new text); a changed seed is a different grid."""
    from diffusion_curriculum.errors import RunError
    from diffusion_curriculum.experiments.runner import GRID_OUTPUTS
    from diffusion_curriculum.jobs import claim_folder

    text = preset_path("smoke").read_text()
    out = tmp_path / "g"
    claim_folder(out, "grid.yaml", text, "grid", False, GRID_OUTPUTS, validate=load_grid)
    (out / "runs" / "none-none-s0").mkdir(parents=True)
    commented = "# measured: 3 s on 2 idle cores\n" + text.replace("\nseeds:", "\n# fresh seeds\nseeds:")
    claim_folder(out, "grid.yaml", commented, "grid", False, GRID_OUTPUTS, validate=load_grid)
    assert (out / "grid.yaml").read_text() == commented and (out / "runs" / "none-none-s0").is_dir()
    changed = yaml.safe_load(text) | {"seeds": [5, 6]}
    with pytest.raises(RunError, match="holds a different grid; pass --overwrite"):
        claim_folder(out, "grid.yaml", yaml.safe_dump(changed), "grid", False, GRID_OUTPUTS, validate=load_grid)
    assert (out / "grid.yaml").read_text() == commented


def test_a_finished_run_is_used_only_if_this_grid_gives_it_the_same_config(tmp_path, capsys):
    """docs/experiments.md shares finished runs between grids by copying their folders: a copy made with this
    grid's config is used as it is (its folder, ``out``, may differ), one made with another is refused in one
    line, exit 2, before anything is trained or evaluated and without touching the folder."""
    from diffusion_curriculum.cli import main
    from diffusion_curriculum.config import dotted_overrides, dump_config, load_config

    path = _grid_file(
        tmp_path,
        methods=["none"],
        eval={"every": 5},
        base={"data": {"dataset": "gmm"}, "model": {"arch": "mlp", "preset": "tiny"}, "train": {"max_steps": 10}},
    )
    grid = load_grid(path)
    spec = grid.runs()[0]
    out = tmp_path / "out"
    run = out / "runs" / spec.name
    run.mkdir(parents=True)
    elsewhere = grid.run_config(spec, tmp_path / "other_grid" / "runs" / spec.name)
    (run / "done.json").write_text(json.dumps({"name": spec.name, "status": "done"}))

    changed = load_config(overrides={**dotted_overrides(elsewhere.to_dict()), "train.lr": elsewhere.train.lr * 2})
    dump_config(changed, run / "config.yaml")
    before = sorted(p.name for p in run.iterdir())
    code = main(["compare", "--config", str(path), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"{run} is a finished run of another experiment (train.lr is" in err[0] and "move it out of" in err[0]
    assert sorted(p.name for p in run.iterdir()) == before

    dump_config(elsewhere, run / "config.yaml")  # the same experiment, trained in another folder
    from diffusion_curriculum.experiments.runner import _check_finished_run

    _check_finished_run(grid, spec, run)


@pytest.mark.parametrize(
    ("cores", "workers", "omp", "threads"),
    [
        (8, 2, None, 4),
        (8, 2, "1", 1),
        (8, 2, "3,1", 3),
        (8, 2, "16", 4),
        (8, 2, "abc", 4),
        (8, 2, "0", 4),
        (2, 4, None, 1),
    ],
)
def test_a_local_grid_shares_the_cores_out_at_most_omp_num_threads_each(monkeypatch, cores, workers, omp, threads):
    from diffusion_curriculum.experiments import runner

    monkeypatch.setattr(runner.os, "cpu_count", lambda: cores)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert runner._threads_per_worker(workers) == threads
