"""Multi-turn environments (rlvf.api.environments, rlvf.sampling.episodes) on tiny real models, from a third-party
environment package installed from a fixture and discovered through the entry point."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import torch
from test_trainer import toy, toy_config, training_metrics  # noqa: F401  (toy: a fixture)

from conftest import plugins_json, write_distribution
from rlvf.algorithms import BatchTotals
from rlvf.config import load_config
from rlvf.errors import ConfigError, PluginError
from rlvf.plugins import PluginInfo, load_registry

# A third-party distribution: `one_turn` ends every episode after the model's first turn; `nudge` answers each
# turn with an inline " ok " and a chat "user" message alternately, for `turns` model turns.
TOY_ENVIRONMENTS = """
from rlvf.api import Environment, Episode, Observation, hookimpl

class OneTurnEpisode(Episode):
    def step(self, text, finished):
        return None

class OneTurn(Environment):
    name = "one_turn"
    description = "ends after the first model turn"
    def start(self, row, context):
        return OneTurnEpisode()

class NudgeEpisode(Episode):
    def __init__(self, turns, role):
        super().__init__()
        self.turns, self.role = turns, role
        self.state["nudges"] = 0
    def step(self, text, finished):
        if self.state["nudges"] + 1 >= self.turns:
            return None
        self.state["nudges"] += 1
        return Observation(" ok ", role=self.role)

class Nudge(Environment):
    name = "nudge"
    description = "says ok after each turn"
    options = {"turns": 3, "role": "inline"}
    def start(self, row, context):
        return NudgeEpisode(self.options["turns"], self.options["role"])

@hookimpl
def register_environments(register):
    register(OneTurn())
    register(Nudge())
"""


@pytest.fixture
def toy_environments(toy):  # noqa: F811  (the fixture of test_trainer)
    model_dir, data, site = toy
    write_distribution(site, "rlvf-toy-env", "rlvf_toy_env", TOY_ENVIRONMENTS, {"toy-env": "rlvf_toy_env"})
    return model_dir, data, site


def trainer_with_environments(config, site):
    trainer_registry = load_registry()
    sys.path.insert(0, str(site))
    try:
        modules = [importlib.import_module(name) for name in ("rlvf_digits", "rlvf_toy_env")]
    finally:
        sys.path.remove(str(site))
    for module, (name, dist) in zip(modules, [("digits", "rlvf-digits"), ("toy-env", "rlvf-toy-env")], strict=True):
        trainer_registry.add_plugin(module, PluginInfo(name, dist, "0.1.0", f"{name} = {module.__name__}"))
    from rlvf.stages.rl import Trainer

    return Trainer(config, trainer_registry)


def test_the_environment_package_is_discovered_through_the_entry_point(toy_environments):
    _, _, site = toy_environments
    listed = {p["distribution"]: p for p in plugins_json({"PYTHONPATH": str(site)})}
    assert listed["rlvf-toy-env"]["environments"] == ["one_turn", "nudge"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algorithm", [[], ['algorithm.preset="ppo"', "critic.lr=3e-3"]], ids=["grpo", "ppo"])
def test_a_one_turn_environment_trains_exactly_like_a_single_turn_task(toy_environments, tmp_path, algorithm):
    model_dir, data, site = toy_environments
    runs = {}
    for name, extra in (("plain", []), ("episodes", ['task.environment="one_turn"'])):
        config = load_config(None, [*toy_config(model_dir, data, tmp_path / name, steps=3, eval_before=False,
                                                save_every=0), *algorithm, *extra])
        trainer_with_environments(config, site).run()
        runs[name] = training_metrics(tmp_path / name)
    episode_keys = ("episode/", "env/")
    stripped = [{k: v for k, v in m.items() if not k.startswith(episode_keys)} for m in runs["episodes"]]
    assert stripped == runs["plain"]
    assert all(m["episode/turns"] == 1 and m["episode/environment_tokens"] == 0 for m in runs["episodes"])


def nudge_episodes(toy_environments, tmp_path, role="inline", chat=False, model_dir=None):
    toy_model_dir, data, site = toy_environments
    model_dir = model_dir or toy_model_dir
    config = load_config(None, [*toy_config(model_dir, data, tmp_path / "run", steps=1), 'task.environment="nudge"',
                                f'task.environment_options={{turns = 3, role = "{role}", max_tokens = 40}}',
                                f"task.chat={json.dumps(chat)}"])
    trainer = trainer_with_environments(config, site)
    rows = trainer.prompts_for_step(0)
    rollout, samples, metrics = trainer.rollout(rows)
    return trainer, rows, rollout, samples, metrics


def test_environment_tokens_enter_no_loss_and_get_no_gradient(toy_environments, tmp_path):
    trainer, rows, rollout, samples, metrics = nudge_episodes(toy_environments, tmp_path)
    inserted = trainer.tokenizer(" ok ", add_special_tokens=False)["input_ids"]
    environment = (rollout.generated == 0) & (rollout.completion_ids != -1)
    assert environment.any() and metrics["episode/environment_tokens"] > 0
    for i, flags in enumerate(samples.generated):
        ids = samples.completion_ids[i]
        env_ids = [token for token, flag in zip(ids, flags, strict=True) if not flag]
        assert env_ids == inserted * (len(env_ids) // len(inserted))  # exactly the observations' tokens
        assert all(lp == 0.0 for lp, flag in zip(samples.logprobs[i], flags, strict=True) if not flag)
        assert [m["role"] for m in samples.messages[i]][:2] == ["assistant", "tool"]
    assert not (rollout.mask * environment).any()
    # The loss's gradient reaches the model's tokens and none of the environment's.
    rollout.advantages = torch.ones_like(rollout.mask)
    logprobs, _, _ = trainer.policy_forward(rollout, 1.0, with_entropy=False)
    logprobs.retain_grad()
    policy_loss = trainer.registry.algorithms.policy_loss[trainer.config.algorithm.policy_loss]
    token_loss, _ = policy_loss(logprobs, logprobs.detach(), rollout.advantages, rollout.mask)
    aggregate = trainer.registry.algorithms.loss_aggregation[trainer.config.algorithm.loss_aggregation]
    aggregate(token_loss, rollout.mask, BatchTotals(sequences=len(rows), tokens=int(rollout.mask.sum()),
                                                    max_tokens=40)).backward()
    assert (logprobs.grad[environment] == 0).all()
    assert (logprobs.grad[rollout.mask > 0] != 0).any()


def test_a_chat_observation_continues_the_conversation_as_the_chat_template_writes_it(toy_environments, tmp_path,
                                                                                     tiny_model_dir):
    # the embedded model's tokenizer and chat template, on a tiny random model
    trainer, rows, rollout, samples, _ = nudge_episodes(toy_environments, tmp_path, role="user", chat=True,
                                                        model_dir=tiny_model_dir)
    tokenizer = trainer.tokenizer
    checked = 0
    for i, messages in enumerate(samples.messages):
        if len(messages) < 3:  # the episode ran out of tokens in its first turn
            continue
        checked += 1
        row = rows[samples.prompt_index(i)]
        context = tokenizer.decode(rollout.input_ids[i][rollout.attention_mask[i] > 0])
        # what the template writes for the prompt and the episode's first exchange, up to the next assistant turn
        rendered = tokenizer.apply_chat_template([*row["prompt"], *messages[:2]], tokenize=False,
                                                 add_generation_prompt=True)
        assert context.startswith(rendered), (context, rendered)
    assert checked


@pytest.mark.timeout(300)
def test_a_multi_turn_run_learns_on_a_tiny_model(toy_environments, tmp_path):
    model_dir, data, site = toy_environments
    config = load_config(None, [*toy_config(model_dir, data, tmp_path / "run", steps=25, eval_before=True,
                                            save_every=0), 'task.environment="nudge"',
                                "task.environment_options={turns = 2, max_tokens = 30}"])
    results = trainer_with_environments(config, site).run()
    metrics = training_metrics(tmp_path / "run")
    rewards = [m["reward/mean"] for m in metrics]
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.2, rewards
    assert all(m["episode/turns"] > 1 for m in metrics)
    assert results["after"]["episode/turns"] > 1 and "env/nudges" in results["after"]


def test_bad_environment_config_names_what_to_fix(toy_environments, tmp_path):
    model_dir, data, site = toy_environments
    base = toy_config(model_dir, data, tmp_path / "run", steps=1)
    with pytest.raises(PluginError, match=r"unknown environment 'nope'.*nudge"):
        trainer_with_environments(load_config(None, [*base, 'task.environment="nope"']), site)
    with pytest.raises(ConfigError, match=r"environment 'nudge' has no option 'turn'.*turns"):
        trainer_with_environments(load_config(None, [*base, 'task.environment="nudge"',
                                                     "task.environment_options={turn = 2}"]), site)
    with pytest.raises(ConfigError, match=r"environment_options is set but no task.environment"):
        trainer_with_environments(load_config(None, [*base, "task.environment_options={turns = 2}"]), site)
    with pytest.raises(ConfigError, match="max_turns must be a whole number"):
        trainer_with_environments(load_config(None, [*base, 'task.environment="nudge"',
                                                     "task.environment_options={max_turns = 0}"]), site)


def test_the_last_allowed_turn_is_stepped_so_the_state_counts_it(toy_environments, tmp_path):
    model_dir, data, site = toy_environments
    config = load_config(None, [*toy_config(model_dir, data, tmp_path / "run", steps=1), 'task.environment="nudge"',
                                "task.environment_options={turns = 9, max_turns = 2, max_tokens = 200}"])
    trainer = trainer_with_environments(config, site)
    _, samples, _ = trainer.rollout(trainer.prompts_for_step(0))
    assert all(sum(m["role"] == "assistant" for m in messages) == 2 for messages in samples.messages)
    assert [state["nudges"] for state in samples.states] == [2] * len(samples.states)  # both turns seen
    assert all(messages[-1]["role"] == "assistant" for messages in samples.messages)  # the last nudge is dropped
