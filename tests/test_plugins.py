"""Plugin discovery through the `rlvf` entry-point group, with real installed distributions."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import BIN, plugins_json, run_rlvf, write_distribution

CORE_ENTRY_POINTS = {"builtin-algorithms", "builtin-samplers", "builtin-commands", "builtin-exploits"}

REWARD_PLUGIN = """
from rlvf import hookimpl

def shout(prompts, completions, **columns):
    '''1.0 for completions in capitals.'''
    return [1.0 if c.isupper() else 0.0 for c in completions]

@hookimpl
def register_rewards(register):
    register(shout)
"""


def test_builtin_distributions_are_discovered_through_entry_points():
    plugins = {p["distribution"]: p for p in plugins_json()}
    assert "boxed" in plugins["rlvf-text"]["rewards"] and "qa" in plugins["rlvf-text"]["rewards"]
    assert "arithmetic" in plugins["rlvf-tasks"]["tasks"]
    assert plugins["rlvf-text"]["version"] == "0.1.0"
    assert plugins["rlvf-text"]["entry_point"] == "text = rlvf_text.plugin"


def test_plain_listing_names_each_plugin_and_what_it_provides():
    out = run_rlvf("plugins").stdout
    assert "rlvf-text" in out and "rlvf-tasks" in out and "arithmetic" in out


def test_rlvf_plugins_env_restricts_what_loads():
    def loaded(env):  # the core's own entry points (its algorithms, samplers, commands) load whatever the filter
        plugins = plugins_json(env=env)
        assert {p["name"] for p in plugins if p["distribution"] == "rlvf"} == CORE_ENTRY_POINTS
        return [p["distribution"] for p in plugins if p["distribution"] != "rlvf"]

    assert loaded({"RLVF_PLUGINS": "rlvf-text"}) == ["rlvf-text"]
    assert loaded({"RLVF_PLUGINS": "tasks"}) == ["rlvf-tasks"]
    assert loaded({"RLVF_PLUGINS": ""}) == []


def test_a_plugin_on_the_path_is_found_and_scores(site, tmp_path):
    directory, env = site
    write_distribution(directory, "rlvf-shout", "rlvf_shout", REWARD_PLUGIN, {"shout": "rlvf_shout"})
    assert "shout" in {p["distribution"]: p for p in plugins_json(env)}["rlvf-shout"]["rewards"]
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "p", "completion": "HELLO"}\n{"prompt": "p", "completion": "hello"}\n')
    out = run_rlvf("score", "--reward", "shout", "--input", str(rows), env=env).stdout
    assert [line.count('"shout": 1.0') for line in out.splitlines()] == [1, 0]


def test_plugin_that_fails_to_import_is_named(site):
    directory, env = site
    write_distribution(directory, "rlvf-broken", "rlvf_broken", "import no_such_module_xyz\n",
                       {"broken": "rlvf_broken"})
    result = run_rlvf("plugins", env=env, check=False)
    assert result.returncode == 2
    assert "rlvf-broken" in result.stderr and "broken = rlvf_broken" in result.stderr
    assert "failed to import" in result.stderr and "no_such_module_xyz" in result.stderr


def test_two_plugins_registering_one_name_are_both_named(site):
    directory, env = site
    write_distribution(directory, "rlvf-shout", "rlvf_shout", REWARD_PLUGIN, {"shout": "rlvf_shout"})
    write_distribution(directory, "rlvf-shout-copy", "rlvf_shout_copy", REWARD_PLUGIN, {"shout2": "rlvf_shout_copy"})
    result = run_rlvf("plugins", env=env, check=False)
    assert result.returncode == 2
    assert "reward 'shout' is registered twice" in result.stderr
    assert "rlvf-shout " in result.stderr and "rlvf-shout-copy" in result.stderr


def test_a_task_name_clash_with_a_builtin_is_reported(site):
    directory, env = site
    source = """
    from rlvf import hookimpl
    from rlvf.api.tasks import Task

    class Clash(Task):
        name = "arithmetic"

    @hookimpl
    def register_tasks(register):
        register(Clash())
    """
    write_distribution(directory, "rlvf-clash", "rlvf_clash", source, {"clash": "rlvf_clash"})
    result = run_rlvf("tasks", env=env, check=False)
    assert result.returncode == 2
    assert "task 'arithmetic' is registered twice" in result.stderr and "rlvf-tasks" in result.stderr
    assert "rlvf-clash" in result.stderr


def test_a_hook_that_raises_is_named(site):
    directory, env = site
    source = """
    from rlvf import hookimpl

    @hookimpl
    def register_rewards(register):
        raise RuntimeError("cannot find my model weights")
    """
    write_distribution(directory, "rlvf-raising", "rlvf_raising", source, {"raising": "rlvf_raising"})
    result = run_rlvf("rewards", env=env, check=False)
    assert result.returncode == 2
    assert "rlvf-raising" in result.stderr and "register_rewards raised RuntimeError" in result.stderr
    assert "cannot find my model weights" in result.stderr


def test_a_misspelt_hook_is_an_error_not_silence(site):
    directory, env = site
    source = """
    from rlvf import hookimpl

    @hookimpl
    def register_reward(register):  # missing the final 's'
        pass
    """
    write_distribution(directory, "rlvf-typo", "rlvf_typo", source, {"typo": "rlvf_typo"})
    result = run_rlvf("plugins", env=env, check=False)
    assert result.returncode == 2
    assert "rlvf-typo" in result.stderr and "invalid hook" in result.stderr and "register_reward" in result.stderr


def test_registering_a_non_task_is_an_error(site):
    directory, env = site
    source = """
    from rlvf import hookimpl

    @hookimpl
    def register_tasks(register):
        register({"name": "dict-task"})
    """
    write_distribution(directory, "rlvf-badtask", "rlvf_badtask", source, {"badtask": "rlvf_badtask"})
    result = run_rlvf("tasks", env=env, check=False)
    assert result.returncode == 2 and "rlvf-badtask" in result.stderr
    assert "expected an rlvf.api.tasks.Task" in result.stderr


@pytest.mark.timeout(600)
def test_new_plugin_package_installs_and_scores(tmp_path):
    """The whole user path: scaffold a plugin, pip-install it, see it, score with it and run its own test. It
    installs into a directory of its own on PYTHONPATH: installing into the shared venv raced the other xdist
    workers, whose `rlvf` saw its entry point before its module (CI, stop 28)."""
    run_rlvf("new-plugin", "short_answer", "--directory", str(tmp_path))
    package, site = tmp_path / "rlvf-short-answer", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(package)], check=True, timeout=300)
    env = {"PYTHONPATH": str(site)}
    plugins = {p["distribution"]: p for p in plugins_json(env)}
    assert plugins["rlvf-short-answer"]["rewards"] == ["short_answer"]
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "q", "completion": "42", "answer": "42"}\n'
                    '{"prompt": "q", "completion": "' + "x" * 300 + '", "answer": "42"}\n')
    output = tmp_path / "scored.jsonl"
    run_rlvf("score", "--reward", "short_answer", "--reward", "qa_exact:2", "--input", str(rows),
             "--output", str(output), env=env)
    assert [line.count('"short_answer": 1.0') for line in output.read_text().splitlines()] == [1, 0]
    own_tests = subprocess.run([str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", str(package / "tests")],
                               capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert own_tests.returncode == 0, own_tests.stdout + own_tests.stderr
    assert "rlvf-short-answer" not in {p["distribution"] for p in plugins_json()}  # nothing leaked into the venv


def test_new_plugin_rejects_a_bad_name_and_an_existing_folder(tmp_path):
    assert "use lower-case" in run_rlvf("new-plugin", "Bad-Name", "--directory", str(tmp_path), check=False).stderr
    run_rlvf("new-plugin", "fine", "--directory", str(tmp_path))
    assert "already exists" in run_rlvf("new-plugin", "fine", "--directory", str(tmp_path), check=False).stderr
