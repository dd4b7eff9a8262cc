"""A third-party distribution adds an advantage estimator, a sampler and a command through the hooks
register_algorithms, register_samplers and register_commands, and they work through the real CLI."""

from __future__ import annotations

import json

import pytest
from test_trainer import DIGITS_PLUGIN, toy_config

from conftest import plugins_json, run_rlvf, write_distribution

EXTRAS_PLUGIN = """
import os

from rlvf.api import Command, HFSampler, algorithm, hookimpl


@algorithm(name="flat")
def flat_advantages(inputs, value=1.0):
    '''The same advantage on every token: the trainer's advantage metric shows it.'''
    return inputs.mask * value


class MarkingSampler(HFSampler):
    '''The HF sampler, counting its calls in the file $MARKER.'''

    name = "marking"

    def sample(self, prompt_ids, params, seed=None):
        with open(os.environ["MARKER"], "a") as marker:
            marker.write(f"{len(prompt_ids)}\\n")
        return super().sample(prompt_ids, params, seed)


def marking_sampler(config, model, tokenizer, *, path, seed, batch_size):
    '''HF sampling that leaves a mark per call.'''
    return MarkingSampler(model, tokenizer, batch_size=batch_size, description="marking")


def greet(args):
    print(f"hello {args.name}")
    return 3


@hookimpl
def register_algorithms(register):
    register("advantage", flat_advantages)


@hookimpl
def register_samplers(register):
    register("marking", marking_sampler)


@hookimpl
def register_commands(register):
    register(Command("greet", "print a greeting", greet,
                     add_arguments=lambda parser: parser.add_argument("--name", default="world")))
"""


@pytest.fixture
def extras(site):
    directory, env = site
    write_distribution(directory, "rlvf-extras", "rlvf_extras", EXTRAS_PLUGIN, {"extras": "rlvf_extras"})
    return directory, env


def test_the_plugin_is_listed_with_what_it_registered(extras):
    _, env = extras
    plugin = {p["distribution"]: p for p in plugins_json(env)}["rlvf-extras"]
    assert (plugin["algorithms"], plugin["samplers"], plugin["commands"]) == (["advantage:flat"], ["marking"],
                                                                               ["greet"])
    listing = run_rlvf("algorithms", env=env).stdout
    assert "flat" in listing.splitlines()[2]  # the advantage estimator row
    assert "marking" in listing and "HF sampling that leaves a mark per call." in listing
    assert "greet" in run_rlvf("--help", env=env).stdout and "print a greeting" in run_rlvf("--help", env=env).stdout


def test_a_plugin_command_runs_with_its_arguments_and_exit_status(extras):
    _, env = extras
    result = run_rlvf("greet", "--name", "rlvf", env=env, check=False)
    assert (result.returncode, result.stdout) == (3, "hello rlvf\n")


@pytest.mark.timeout(240)
def test_train_uses_the_plugin_estimator_and_sampler(extras, tmp_path, char_model_dir):
    directory, env = extras
    write_distribution(directory, "rlvf-digits", "rlvf_digits", DIGITS_PLUGIN, {"digits": "rlvf_digits"})
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"question": f"say digits {i}"}) + "\n" for i in range(8)))
    marker = tmp_path / "marker"
    overrides = toy_config(char_model_dir, data, tmp_path / "run", steps=1)
    overrides = [o for o in overrides if not o.startswith("sampling.sampler=")]
    overrides += ['sampling.sampler="marking"', 'algorithm.advantage="flat"', "algorithm.advantage_options.value=0.375",
                  "eval.limit=2"]
    run_rlvf("train", *overrides, env={**env, "MARKER": str(marker)})
    step = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
            if "advantage/abs_mean" in line]
    assert [row["advantage/abs_mean"] for row in step] == [pytest.approx(0.375)]
    assert "4" in marker.read_text().split()  # the step's 4 prompts went through the plugin's sampler


def test_an_unknown_sampler_names_the_installed_ones(tmp_path):
    result = run_rlvf("train", 'sampling.sampler="nope"', f"train.output_dir={json.dumps(str(tmp_path / 'r'))}",
                      check=False)
    assert result.returncode == 2
    assert "sampling.sampler = 'nope' is not an installed sampler" in result.stderr
    assert "auto, hf, vllm" in result.stderr


@pytest.mark.parametrize("hook, kind", [
    ("register_algorithms(register):\n    register('advantage', lambda inputs: inputs.mask, name='grpo')",
     "advantage estimator 'grpo'"),
    ("register_samplers(register):\n    register('hf', lambda *a, **k: None)", "sampler 'hf'"),
    ("register_commands(register):\n    register(Command('score', 'x', print))", "command 'score'"),
])
def test_a_name_registered_twice_names_both_plugins(site, hook, kind):
    directory, env = site
    source = f"from rlvf.api import Command, hookimpl\n\n@hookimpl\ndef {hook}\n"
    write_distribution(directory, "rlvf-clash", "rlvf_clash", source, {"clash": "rlvf_clash"})
    result = run_rlvf("plugins", env=env, check=False)
    assert result.returncode == 2
    assert f"{kind} is registered twice" in result.stderr
    assert "distribution rlvf 0.1.0" in result.stderr and "distribution rlvf-clash" in result.stderr


def test_a_plugin_command_whose_arguments_fail_is_named(site):
    directory, env = site
    source = ("from rlvf.api import Command, hookimpl\n\ndef broken(parser):\n    raise RuntimeError('no parser')\n\n"
              "@hookimpl\ndef register_commands(register):\n    register(Command('broken', 'x', print, broken))\n")
    write_distribution(directory, "rlvf-broken-command", "rlvf_bc", source, {"bc": "rlvf_bc"})
    result = run_rlvf("plugins", env=env, check=False)
    assert result.returncode == 2
    assert "command 'broken'" in result.stderr and "rlvf-broken-command" in result.stderr
    assert "no parser" in result.stderr


def test_the_plugin_filter_never_drops_the_core(site):
    _, env = site
    assert "train" in run_rlvf("--help", env={**env, "RLVF_PLUGINS": "rlvf-text"}).stdout
