"""Issue 34's judging presets: seeds fresh for the sampler they judge, and `variance_digits`' shared arms exactly
Grid B's runs (`curriculum_digits`), so that copying those finished runs into its folder is the same as
training them again."""

from pathlib import Path

import pytest
import yaml

from diffusion_curriculum.experiments import PRESETS, load_grid, preset_path
from diffusion_curriculum.experiments.grid import verdict_plan

SHARED = ("none", "uniform_aa", "loss_importance")


def _grid(name: str):
    return load_grid(preset_path(name))


def test_variance_digits_shared_arms_are_grid_b_s_runs_config_for_config():
    judged, grid_b = _grid("variance_digits"), _grid("curriculum_digits")
    assert list(judged.seeds) == list(grid_b.seeds)
    ours = {s.name: s for s in judged.runs() if s.method in SHARED}
    theirs = {s.name: s for s in grid_b.runs() if s.method in SHARED}
    assert set(ours) == set(theirs) and len(ours) == len(SHARED) * len(judged.seeds)
    folder = Path("/tmp/unused/runs")
    for name in ours:
        assert judged.run_config(ours[name], folder / name) == grid_b.run_config(theirs[name], folder / name), name
    # and the evaluation every run of both grids gets (the runner's settings, not part of a run's config)
    keys = ("budget", "eval_every", "eval_n", "eval_steps", "eval_solver", "dense_every", "eval_dense_items")
    assert {k: getattr(judged, k) for k in keys} == {k: getattr(grid_b, k) for k in keys}
    assert (judged.target_fraction, judged.eval_evaluator) == (grid_b.target_fraction, grid_b.eval_evaluator)


def test_the_variance_arms_read_the_clusters_the_development_grid_used():
    """The amendment moved pacing keys only: the variance arms' clusters are those of the development runs."""
    judged, dev = _grid("variance_digits"), _grid("variance_dev")
    folder = Path("/tmp/unused")
    for label in ("variance_importance", "variance_balanced"):
        cur = judged.run_config(next(s for s in judged.runs() if s.method == label), folder).curriculum
        ref = dev.run_config(next(s for s in dev.runs() if s.method == label), folder).curriculum
        assert (cur.n_clusters, cur.clustering) == (ref.n_clusters, ref.clustering)
        assert cur.sampler_params == ref.sampler_params


def test_the_judging_seeds_were_never_development_seeds():
    dev = set(_grid("variance_dev").seeds)
    for name in ("variance_gmm", "variance_digits", "variance_uncond", "variance_class"):
        assert not set(_grid(name).seeds) & dev, name


@pytest.mark.parametrize(("name", "problem"), [("variance_uncond", "uncond"), ("variance_class", "class")])
def test_the_14x14_judging_grids_are_their_verdicts_problem_on_seeds_no_other_preset_uses(name, problem):
    """The issue's 5 seeds, used by no other preset; the verdict's data, model, conditioning and training
    (its pacing keys aside, which no arm here reads); at least 16 FID points; the five arms and the
    head-to-head contrasts with loss importance sampling in Holm's family."""
    judged, verdict = _grid(name), _grid(problem)
    assert len(judged.seeds) == 5
    others = set().union(*(set(_grid(p).seeds) for p in PRESETS if p != name))
    assert not set(judged.seeds) & others
    assert judged.budget // judged.eval_every >= 16 and judged.budget == verdict.budget
    for section in ("data", "model", "objective", "train", "sample"):
        assert judged.base.get(section) == verdict.base.get(section), section
    assert judged.base["curriculum"]["n_clusters"] == verdict.base["curriculum"]["n_clusters"]
    assert judged.methods == ["none", "uniform_aa", "loss_importance", "variance_importance", "variance_balanced"]
    plan = verdict_plan(yaml.safe_load(preset_path(name).read_text())["verdict"])
    assert plan.family == ("variance_importance", "variance_balanced") and plan.primary == ("e1", "e2")
    assert plan.contrasts == (("variance_importance", "loss_importance"), ("variance_balanced", "loss_importance"))
