"""Step rewards (rlvf.api.StepScores): validated, reduced for the mix, placed on the tokens ending each step for
token estimators, written by `rlvf score`; a single-step reward trains exactly like its scalar form."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import torch
from test_environments import TOY_ENVIRONMENTS
from test_trainer import toy, toy_config, training_metrics  # noqa: F401  (toy: a fixture)
from transformers import AutoTokenizer

from conftest import run_rlvf, write_distribution
from rlvf.algorithms import AdvantageInputs
from rlvf.algorithms.advantages import reinforce_pp_advantages, step_token_rewards, token_at
from rlvf.api import StepScores
from rlvf.api.rewards import MixEntry, RewardMix
from rlvf.config import load_config
from rlvf.errors import ConfigError, RewardError
from rlvf.plugins import PluginInfo, load_registry
from rlvf.sampling import SamplingParams
from rlvf.sampling.base import finish_samples
from rlvf.stages.rl import Trainer

STEPS = "1 + 2 = 3\n3 + 4 = 7\nThe answer is 7"


def step_reward(prompts, completions, **columns):
    return [StepScores.split(c, [1.0, 0.0, 0.5]) for c in completions]


def test_split_finds_where_each_step_ends():
    scored = StepScores.split(STEPS + "\n\n", [1, 0, 0.5])
    assert [STEPS[:end].rsplit("\n", 1)[-1] for end in scored.ends] == ["1 + 2 = 3", "3 + 4 = 7", "The answer is 7"]


@pytest.mark.parametrize(("how", "expected"), [("min", 0.0), ("last", 0.5), ("mean", 0.5)])
def test_the_mix_sees_the_reduction_and_keeps_the_steps(how, expected):
    result = RewardMix([MixEntry("steps", step_reward, weight=2.0, step_reduction=how)]).score(["p"], [STEPS])
    assert result.per_reward["steps"] == [expected] and result.total == [2 * expected]
    assert result.steps["steps"][0].scores == [1.0, 0.0, 0.5]


@pytest.mark.parametrize(("scores", "problem"), [
    (StepScores([1.0], [len(STEPS) + 1]), "past the completion"),
    (StepScores([1.0, 0.0], [5]), "2 step scores but 1 step ends"),
    (StepScores([float("nan")], [5]), "not a finite number"),
    (StepScores([1.0, 1.0], [9, 4]), "positive and increasing"),
    (StepScores([1.0], [2.5]), "whole character offsets"),
    (StepScores(["1"], [5]), "not a finite number"),
    (StepScores(1.0, 5), "must be lists"),
])
def test_bad_step_scores_name_the_reward_and_the_sample(scores, problem):
    def bad(prompts, completions, **columns):
        return [scores for _ in completions]
    with pytest.raises(RewardError, match=f"reward 'bad' failed on sample 0: step scores: .*{problem}"):
        RewardMix([MixEntry("bad", bad)]).score(["p"], [STEPS])
    zeroed = RewardMix([MixEntry("bad", bad, on_error="zero")]).score(["p"], [STEPS])
    assert zeroed.per_reward["bad"] == [0.0] and zeroed.failures == {"bad": 1}


def test_numpy_step_scores_are_taken_as_floats_and_an_unknown_reduction_is_refused():
    import numpy as np

    def numpy_steps(prompts, completions, **columns):
        return [StepScores(np.array([0.25, 0.75], dtype=np.float32), np.array([9, 19])) for _ in completions]
    result = RewardMix([MixEntry("np", numpy_steps, step_reduction="last")]).score(["p"], [STEPS])
    assert result.per_reward["np"] == [0.75] and result.steps["np"][0] == StepScores([0.25, 0.75], [9, 19])
    assert type(result.steps["np"][0].ends[0]) is int
    with pytest.raises(ConfigError, match="reward 'np': step_reduction 'max' is not one of min, last, mean"):
        MixEntry("np", numpy_steps, step_reduction="max")
    with pytest.raises(ConfigError, match="step_reduction"):
        load_config(None, ['reward.mix.np={reward = "np", step_reduction = "max"}'])


def test_each_step_lands_on_the_token_holding_its_last_character(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer(STEPS, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    for end in StepScores.split(STEPS, [0, 0, 0]).ends:
        token = token_at(tokenizer, ids, end)
        assert len(tokenizer.decode(ids[:token])) < end <= len(tokenizer.decode(ids[: token + 1]))
    assert token == len(ids) - 2  # the last character's token, before the EOS


def holding(tokenizer, text: str, char: int) -> int:
    """The token of `text`'s tokenisation whose character span holds `char` (from the tokenizer's own offsets)."""
    spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return next(k for k, (start, stop) in enumerate(spans) if start <= char < stop)


def test_the_step_reward_tensor_has_each_score_on_its_step_tokens_only(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tokenizer.eos_token_id
    ids = tokenizer(STEPS, add_special_tokens=False)["input_ids"]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=64, n=1, stop=[])
    ended = finish_samples(tokenizer, {eos}, [[*ids, eos]], [[0.0] * (len(ids) + 1)], params)
    # the sampler's stop-string cut: the text ends after "= 7\n", its tokens cover the stop string
    cut = finish_samples(tokenizer, {eos}, [list(ids)], [[0.0] * len(ids)], SamplingParams(
        temperature=1.0, top_p=1.0, max_new_tokens=64, n=1, stop=["= 7\n"]))
    texts, completion_ids = ended.texts + cut.texts, ended.completion_ids + cut.completion_ids
    assert texts[1] == "1 + 2 = 3\n3 + 4 = 7\n" and len(completion_ids[1]) < len(ids)
    steps = [StepScores.split(texts[0], [1.0, -0.5, 0.25]), StepScores.split(texts[1], [0.5, 0.75])]
    width = len(completion_ids[0]) + 2  # rows padded past the longest completion, as in a rollout
    rewards, part = step_token_rewards(tokenizer, completion_ids, texts, {"prm": steps}, {"prm": 2.0},
                                       {"prm": [-0.5, 0.5]}, width)
    expected = torch.zeros(2, width)
    expected[0, holding(tokenizer, STEPS, steps[0].ends[0] - 1)] = 2.0
    expected[0, holding(tokenizer, STEPS, steps[0].ends[1] - 1)] = -1.0
    expected[0, len(ids)] = 0.5  # the step ending at the text's end: on the completion's last token (its EOS)
    expected[1, holding(tokenizer, STEPS, steps[1].ends[0] - 1)] = 1.0
    expected[1, holding(tokenizer, STEPS, steps[1].ends[1] - 1)] = 1.5  # "7": the cut text's "\n" is no step
    assert torch.equal(rewards, expected)
    assert part.tolist() == [-1.0, 1.0]  # weight x the reductions the steps replace in the last-token score


def test_credit_reaches_the_step_that_went_wrong():
    mask = torch.ones(2, 6)
    steps = torch.zeros(2, 6)
    steps[:, 2], steps[0, 5], steps[1, 5] = 1.0, 1.0, 0.0  # row 1's second step is wrong
    inputs = AdvantageInputs(scores=torch.tensor([1.0, 0.0]), group_ids=torch.tensor([0, 0]), mask=mask,
                             step_rewards=steps, step_part=torch.tensor([1.0, 0.0]))
    rewards = inputs.token_rewards()
    assert rewards.tolist() == steps.tolist()  # the reductions in `scores` are replaced by the steps
    advantages = reinforce_pp_advantages(inputs)
    # in row 1 the tokens of its right first step (0-2) get more than those of its wrong second step (3-5); with the
    # outcome alone every token of a row gets the same
    assert advantages[1, :3].min() > advantages[1, 3:].max()
    outcome = reinforce_pp_advantages(AdvantageInputs(scores=torch.tensor([1.0, 0.0]), group_ids=torch.tensor([0, 0]),
                                                      mask=mask))
    assert torch.allclose(outcome[1], outcome[1, 0].expand(6))


STEP_DIGITS_PLUGIN = """
from rlvf import hookimpl
from rlvf.api import StepScores, completion_text

def digits(completions):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]

def chunks(text):
    return [text[start:start + 4] for start in range(0, len(text), 4)]

def digit_steps(prompts, completions, **columns):
    '''digits as one step ending at the completion's end (0.0 for an empty one)'''
    texts = [completion_text(c) for c in completions]
    return [StepScores([score], [len(t)]) if t else 0.0 for t, score in zip(texts, digits(texts))]

def digit_lines(prompts, completions, **columns):
    '''one step per line, scored by its digits'''
    texts = [completion_text(c) for c in completions]
    return [StepScores.split(t, digits(t.split("\\n"))) if t.strip() else None for t in texts]

def digit_chunks(prompts, completions, **columns):
    '''one step per 4 characters, scored by its digits'''
    texts = [completion_text(c) for c in completions]
    return [StepScores(digits(chunks(t)), [min(end, len(t)) for end in range(4, len(t) + 4, 4)]) if t else 0.0
            for t in texts]

def digit_chunks_min(prompts, completions, **columns):
    '''the scalar form of digit_chunks under step_reduction = "min"'''
    return [min(digits(chunks(t))) if t else 0.0 for t in (completion_text(c) for c in completions)]

@hookimpl
def register_rewards(register):
    for reward in (digit_steps, digit_lines, digit_chunks, digit_chunks_min):
        register(reward)
"""

PLUGINS = (("rlvf_digits", "digits", "rlvf-digits"), ("rlvf_step_digits", "step-digits", "rlvf-step-digits"),
           ("rlvf_toy_env", "toy-env", "rlvf-toy-env"))


@pytest.fixture
def step_site(toy):  # noqa: F811  (the fixture of test_trainer)
    model_dir, data, site = toy
    write_distribution(site, "rlvf-step-digits", "rlvf_step_digits", STEP_DIGITS_PLUGIN,
                       {"step-digits": "rlvf_step_digits"})
    write_distribution(site, "rlvf-toy-env", "rlvf_toy_env", TOY_ENVIRONMENTS, {"toy-env": "rlvf_toy_env"})
    return model_dir, data, site


def train(step_site, run_dir, *overrides: str) -> list[dict]:
    """The training metrics of 3 steps of the toy run (test_trainer) with `overrides`, the fixture plugins loaded."""
    model_dir, data, site = step_site
    config = load_config(None, [*toy_config(model_dir, data, run_dir, steps=3, eval_before=False, save_every=0),
                                *overrides])
    registry = load_registry()
    sys.path.insert(0, str(site))
    try:
        for module, name, dist in PLUGINS:
            registry.add_plugin(importlib.import_module(module), PluginInfo(name, dist, "0.1.0", f"{name} = {module}"))
    finally:
        sys.path.remove(str(site))
    Trainer(config, registry).run()
    return training_metrics(run_dir)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algorithm", [['algorithm.advantage="reinforce_pp"'], [],
                                       ['algorithm.preset="ppo"', "critic.lr=3e-3"]],
                         ids=["reinforce_pp", "grpo", "ppo (gae)"])
def test_a_single_step_reward_trains_exactly_like_its_scalar_form(step_site, tmp_path, algorithm):
    scalar = train(step_site, tmp_path / "scalar", *algorithm)
    steps = train(step_site, tmp_path / "steps", *algorithm, 'reward.mix={digits = {reward = "digit_steps"}}')
    assert steps == scalar and len(steps) == 3
    assert ("critic/returns_mean" in steps[0]) == ("ppo" in str(algorithm))  # ppo: gae with a critic


@pytest.mark.timeout(300)
def test_reinforce_pp_takes_the_steps_and_step_rewards_reduce_takes_the_reduction(step_site, tmp_path):
    def run(name, reward, *extra):
        return train(step_site, tmp_path / name, 'algorithm.advantage="reinforce_pp"',
                     f'reward.mix={{digits = {{reward = "{reward}"}}}}', *extra)
    scalar = run("scalar", "digit_chunks_min")
    reduced = run("reduced", "digit_chunks", 'algorithm.step_rewards="reduce"')
    on_tokens = run("tokens", "digit_chunks")
    assert reduced == scalar
    # the same completions and rewards at the first step (same seed and weights), a different update from the steps
    assert on_tokens[0]["reward/mean"] == scalar[0]["reward/mean"]
    assert on_tokens[0]["loss"] != scalar[0]["loss"]


def test_step_rewards_with_an_environment_are_refused(step_site, tmp_path):
    with pytest.raises(ConfigError, match="step rewards with environments are not supported yet"):
        train(step_site, tmp_path / "run", 'task.environment="one_turn"',
              'reward.mix={digits = {reward = "digit_steps"}}')


def test_rlvf_score_writes_each_step(tmp_path, site):
    directory, env = site
    write_distribution(directory, "rlvf-step-digits", "rlvf_step_digits", STEP_DIGITS_PLUGIN,
                       {"step-digits": "rlvf_step_digits"})
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": "p", "completion": c}) + "\n" for c in ("a1\n22", " ")))
    out = tmp_path / "scored.jsonl"
    run_rlvf("score", "--input", str(rows), "--reward", "digit_lines", "--reward", "digit_chunks_min",
             "--output", str(out), env=env)
    stepped, blank = (json.loads(line) for line in out.read_text().splitlines())
    # a1\n2 | 2: the scalar reward's min over 4-character chunks is 0.5; digit_lines' min over its lines too
    assert stepped == {"prompt": "p", "completion": "a1\n22", "digit_lines": 0.5, "digit_chunks_min": 0.5,
                       "reward": 1.0, "digit_lines_steps": [{"end": 2, "score": 0.5}, {"end": 5, "score": 1.0}]}
    assert blank == {"prompt": "p", "completion": " ", "digit_lines": None, "digit_chunks_min": 0.0, "reward": 0.0}
