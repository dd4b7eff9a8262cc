"""Step rewards (rlvf.api.StepScores): validated, reduced for the mix, placed on the tokens ending each step for
token estimators, written by `rlvf score`; a single-step reward trains exactly like its scalar form."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import torch
from test_trainer import toy, toy_config, training_metrics  # noqa: F401  (toy: a fixture)
from transformers import AutoTokenizer

from conftest import run_rlvf, write_distribution
from rlvf.algorithms import AdvantageInputs
from rlvf.algorithms.advantages import reinforce_pp_advantages
from rlvf.api import StepScores
from rlvf.api.rewards import MixEntry, RewardMix
from rlvf.config import load_config
from rlvf.errors import RewardError
from rlvf.plugins import PluginInfo, load_registry
from rlvf.stages.rl import Trainer, token_at

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
])
def test_bad_step_scores_name_the_reward_and_the_sample(scores, problem):
    def bad(prompts, completions, **columns):
        return [scores for _ in completions]
    with pytest.raises(RewardError, match=f"reward 'bad' failed on sample 0: step scores: .*{problem}"):
        RewardMix([MixEntry("bad", bad)]).score(["p"], [STEPS])
    zeroed = RewardMix([MixEntry("bad", bad, on_error="zero")]).score(["p"], [STEPS])
    assert zeroed.per_reward["bad"] == [0.0] and zeroed.failures == {"bad": 1}


def test_each_step_lands_on_the_token_holding_its_last_character(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer(STEPS, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    for end in StepScores.split(STEPS, [0, 0, 0]).ends:
        token = token_at(tokenizer, ids, end)
        assert len(tokenizer.decode(ids[:token])) < end <= len(tokenizer.decode(ids[: token + 1]))
    assert token == len(ids) - 2  # the last step ends on the last text token, before the EOS


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
from rlvf.api import StepScores

def digits(completions):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]

def digit_steps(prompts, completions, **columns):
    '''digits as one step ending at the completion's end (0.0 for an empty one)'''
    return [StepScores([score], [len(c)]) if c else 0.0 for c, score in zip(completions, digits(completions))]

def digit_lines(prompts, completions, **columns):
    '''one step per line, scored by its digits'''
    return [StepScores.split(c, digits(c.split("\\n"))) if c.strip() else None for c in completions]

@hookimpl
def register_rewards(register):
    register(digit_steps)
    register(digit_lines)
"""


@pytest.mark.timeout(300)
def test_a_single_step_reward_trains_exactly_like_its_scalar_form(toy, tmp_path):  # noqa: F811
    model_dir, data, site = toy
    write_distribution(site, "rlvf-step-digits", "rlvf_step_digits", STEP_DIGITS_PLUGIN,
                       {"step-digits": "rlvf_step_digits"})
    sys.path.insert(0, str(site))
    try:
        plugins = [(importlib.import_module(module), PluginInfo(name, dist, "0.1.0", f"{name} = {module}"))
                   for module, name, dist in (("rlvf_digits", "digits", "rlvf-digits"),
                                              ("rlvf_step_digits", "step-digits", "rlvf-step-digits"))]
    finally:
        sys.path.remove(str(site))
    runs = {}
    for name, extra in (("scalar", []), ("steps", ['reward.mix={digits = {reward = "digit_steps"}}'])):
        config = load_config(None, [*toy_config(model_dir, data, tmp_path / name, steps=3, eval_before=False,
                                                save_every=0), *extra])
        registry = load_registry()
        for module, info in plugins:
            registry.add_plugin(module, info)
        Trainer(config, registry).run()
        runs[name] = training_metrics(tmp_path / name)
    assert runs["steps"] == runs["scalar"]


def test_rlvf_score_writes_each_step(tmp_path, site):
    directory, env = site
    write_distribution(directory, "rlvf-step-digits", "rlvf_step_digits", STEP_DIGITS_PLUGIN,
                       {"step-digits": "rlvf_step_digits"})
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "p", "completion": "a1\n22"}) + "\n")
    out = tmp_path / "scored.jsonl"
    run_rlvf("score", "--input", str(rows), "--reward", "digit_lines", "--output", str(out), env=env)
    scored = json.loads(out.read_text())
    assert scored["digit_lines"] == 0.5 and scored["reward"] == 0.5  # min over the steps
    assert scored["digit_lines_steps"] == [{"end": 2, "score": 0.5}, {"end": 5, "score": 1.0}]
