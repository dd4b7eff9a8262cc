"""One TOML config with dotted overrides; bad keys and types are reported with their path."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from rlvf.config import Config, load_config, parse_override
from rlvf.errors import ConfigError

EXAMPLE = """
seed = 3
model = "smollm2-135m"

[task]
name = "arithmetic"
options = { train_size = 50 }

[reward]
aggregation = "normalize_then_sum"
[reward.mix]
math = 1.0
format = { reward = "boxed", weight = 0.2, on_error = "zero" }
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(EXAMPLE)
    return path


def test_loads_toml_with_shorthands(config_file):
    config = load_config(config_file)
    assert isinstance(config, Config) and config.seed == 3
    assert config.model.name == "smollm2-135m" and config.model.dtype == "auto"
    assert config.reward.mix["math"].weight == 1.0
    assert config.reward.mix["format"].reward == "boxed" and config.reward.mix["format"].on_error == "zero"
    assert config.task.options == {"train_size": 50}


def test_overrides_are_typed_and_create_sections(config_file):
    config = load_config(config_file, ["seed=7", "reward.mix.math.weight=0.5", "model.name=org/other-model",
                                       "task.options.operators=['+']", "reward.mix.qa=2"])
    assert config.seed == 7 and config.reward.mix["math"].weight == 0.5
    assert config.model.name == "org/other-model" and config.task.options["operators"] == ["+"]
    assert config.reward.mix["qa"].weight == 2.0


@pytest.mark.parametrize("override, expected", [
    ("reward.mix.math.wieght=1", "reward.mix.math.wieght: unknown key"),
    ("sed=1", "sed: unknown key"),
    ("seed=abc", "seed: Input should be a valid integer"),
    ("reward.aggregation=mean", "reward.aggregation: Input should be 'sum' or 'normalize_then_sum'"),
    ("reward.mix.math.on_error=ignore", "reward.mix.math.on_error"),
])
def test_bad_keys_and_types_are_named_by_path(config_file, override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(config_file, [override])
    assert expected in str(info.value) and "command-line overrides" in str(info.value)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[task\nname = 1")
    with pytest.raises(ConfigError, match=r"broken\.toml is not valid TOML"):
        load_config(broken)
    typo = tmp_path / "typo.toml"
    typo.write_text("[taks]\nname = 'x'\n")
    with pytest.raises(ConfigError, match=r"typo.toml\):\n  taks: unknown key"):
        load_config(typo)


def test_override_syntax():
    assert parse_override("a.b=1e-6") == (["a", "b"], 1e-6)
    assert parse_override("a=hello world") == (["a"], "hello world")  # not TOML: taken as a string
    assert parse_override('a="quoted"') == (["a"], "quoted")
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        parse_override("novalue")
    with pytest.raises(ConfigError, match=r"'seed' is a value, not a section"):
        load_config(None, ["seed=1", "seed.x=2"])


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "examples" / "algorithms").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_algorithm_examples_load_with_their_preset(path):
    from rlvf.plugins import load_registry

    config = load_config(path)
    assert config.algorithm.preset == path.stem and config.task.name == "arithmetic"
    estimator = load_registry().algorithms.advantage.get_checked(config.algorithm.advantage)
    inspect.signature(estimator).bind(None, **config.algorithm.advantage_options)  # options it takes
