"""Config loading: defaults, overrides, and one-line errors that name the key."""

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_curriculum.config import Config, ConfigError, load_config, parse_override

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
    config = load_config(overrides={key: value, "curriculum.clusters": 5})
    assert config.train.lr == pytest.approx(3e-4)
    assert config.curriculum.clusters == 5


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
        ({"curriculum": {"order": "backwards"}}, "curriculum.order"),
        ({"curriculum": {"clusters": 2000}}, "curriculum.clusters"),
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


def test_every_config_key_is_documented():
    import dataclasses

    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    config = Config()
    missing = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            missing += [f"{f.name}.{g.name}" for g in dataclasses.fields(value) if g.name not in doc]
    assert not missing, f"keys not mentioned in docs/training.md: {missing}"
