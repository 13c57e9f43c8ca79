"""Config loading: defaults, overrides, and one-line errors that name the key."""

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_curriculum.config import Config, ConfigError, _leaf_fields, config_reference, load_config, parse_override
from diffusion_curriculum.samplers import ORDERS
from diffusion_curriculum.weighting import WEIGHTINGS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_defaults_are_the_digits_curriculum():
    config = load_config()
    assert config.data.dataset == "digits"
    assert config.curriculum.order == "easy_to_hard"
    assert config.out_dir == Path("runs/digits_uncond")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.name == path.stem


def test_every_task_config_exists():
    names = {p.stem for p in CONFIGS}
    assert {"digits_uncond", "mnist5k_class", "mnist5k_text", "toy2d", "gmm"} <= names


def test_overrides_apply_with_yaml_types():
    key, value = parse_override("train.lr=3e-4")
    config = load_config(overrides={key: value, "curriculum.n_clusters": 5})
    assert config.train.lr == pytest.approx(3e-4)
    assert config.curriculum.n_clusters == 5


@pytest.mark.parametrize(
    ("tree", "key"),
    [
        ({"train": {"lr_rate": 1}}, "train.lr_rate"),
        ({"trian": {}}, "trian"),
        ({"train": {"max_steps": "many"}}, "train.max_steps"),
        ({"train": {"max_steps": 0}}, "train.max_steps"),
        ({"train": {"batch_size": -4}}, "train.batch_size"),
        ({"train": {"lr": 0}}, "train.lr"),
        ({"curriculum": {"patience": 0}}, "curriculum.patience"),
        ({"curriculum": {"min_delta": 1.0}}, "curriculum.min_delta"),
        ({"curriculum": {"min_delta_mode": "percent"}}, "curriculum.min_delta_mode"),
        ({"curriculum": {"signal": "median"}}, "curriculum.signal"),
        ({"curriculum": {"cap_multiple": 0.5}}, "curriculum.cap_multiple"),
        ({"curriculum": {"allow_cap_only": "yes"}}, "curriculum.allow_cap_only"),
        ({"curriculum": {"order": "backwards"}}, "curriculum.order"),
        ({"curriculum": {"n_clusters": 2000}}, "curriculum.n_clusters"),
        ({"curriculum": {"cumulative": "yes"}}, "curriculum.cumulative"),
        ({"curriculum": {"pacing": "fixed"}}, "curriculum.steps_per_stage"),
        ({"objective": {"weighting_params": {"gamma": "five"}}}, "objective.weighting_params"),
        ({"model": {"arch": "dit"}}, "model.conditioning"),
        ({"train": 5}, "train"),
    ],
)
def test_bad_values_name_the_key(tmp_path, tree, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(key)
    assert "\n" not in message


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


_SECTIONS = ["data", "model", "objective", "curriculum", "train", "sample"]
_values = st.one_of(
    st.integers(-5, 5), st.floats(allow_nan=False, width=32), st.text(max_size=5), st.booleans(), st.none()
)


@settings(max_examples=150, deadline=None)
@given(
    section=st.sampled_from(_SECTIONS),
    key=st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20),
    value=_values,
)
def test_any_override_either_loads_or_fails_with_a_named_key(section, key, value):
    """Property: whatever a user writes, the result is a valid Config or a ConfigError naming a key."""
    try:
        config = load_config(overrides={f"{section}.{key}": value})
    except ConfigError as exc:
        assert str(exc).split(":")[0].startswith(section)
        assert "\n" not in str(exc)
    else:
        assert isinstance(config, Config)
        assert hasattr(getattr(config, section), key)


def test_the_docs_config_reference_is_the_config_s_own():
    """docs/training.md's table is config_reference() verbatim: a new key, default or help line shows
    up in the docs (and in `train --help`) or this fails."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    start = doc.index("<!-- config-reference")
    table = doc[doc.index("\n", start) + 1 : doc.index("<!-- /config-reference -->")]
    assert table == config_reference()
    for key in ("curriculum.n_clusters", "train.max_steps", "sample.guidance_scale"):
        assert f"| `{key}` |" in table


def test_every_field_has_help_and_choices_agree_with_their_modules():
    from diffusion_curriculum import generation, models, objectives

    for key, f in _leaf_fields(Config, ""):
        assert f.metadata.get("help"), f"{key} has no help line"
    choices = {key: f.metadata.get("choices") for key, f in _leaf_fields(Config, "")}
    assert choices["model.arch"] == models.ARCHITECTURES and choices["model.preset"] == models.PRESETS
    assert choices["model.conditioning"] == models.CONDITIONINGS
    assert choices["objective.name"] == objectives.OBJECTIVES and choices["sample.solver"] == generation.SOLVERS
    assert choices["curriculum.order"] == ORDERS and choices["objective.weighting"] == tuple(WEIGHTINGS)


# Command-line flags that set a config key with a fixed set of values: (command, subcommand or None, flag, key).
FLAG_KEYS = [
    ("train", None, "--curriculum", "curriculum.order"),
    ("train", None, "--sampler", "curriculum.sampler"),
    ("train", None, "--clustering", "curriculum.clustering"),
    ("train", None, "--pacing", "curriculum.pacing"),
    ("train", None, "--weighting", "objective.weighting"),
    ("train", None, "--objective", "objective.name"),
    ("train", None, "--conditioning", "model.conditioning"),
    ("evaluate", None, "--solver", "sample.solver"),
    ("sample", None, "--solver", "sample.solver"),
    ("study", "convergence", "--objective", "objective.name"),
    ("study", "convergence", "--weighting", "objective.weighting"),
    ("study", "convergence", "--clustering", "curriculum.clustering"),
    ("study", "entropy", "--beta-schedule", "objective.beta_schedule"),
]


@pytest.mark.parametrize(("command", "subcommand", "flag", "key"), FLAG_KEYS)
def test_a_flag_offers_exactly_its_config_key_s_values(command, subcommand, flag, key):
    from diffusion_curriculum.cli import build_parser

    parser = build_parser()._subparsers._group_actions[0].choices[command]
    if subcommand is not None:
        parser = parser._subparsers._group_actions[0].choices[subcommand]
    (action,) = [a for a in parser._actions if flag in a.option_strings]
    config_choices = {name: f.metadata.get("choices") for name, f in _leaf_fields(Config, "")}
    assert tuple(action.choices) == config_choices[key]


def test_train_help_lists_every_key():
    from diffusion_curriculum.cli import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for key, _ in _leaf_fields(Config, ""):
        assert f"  {key} (default " in text


def test_the_old_cluster_key_still_loads(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("curriculum: {clusters: 7}\n")
    assert load_config(old).curriculum.n_clusters == 7
    assert load_config(overrides={"curriculum.clusters": 3}).curriculum.n_clusters == 3
    assert load_config(old, {"curriculum.n_clusters": 4}).curriculum.n_clusters == 4  # the newer key wins
    both = tmp_path / "both.yaml"
    both.write_text("curriculum: {clusters: 7, n_clusters: 5}\n")
    with pytest.raises(ConfigError, match=r"curriculum\.clusters: renamed to curriculum\.n_clusters"):
        load_config(both)
