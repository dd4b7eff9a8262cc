"""Reward mixing: weights, aggregation, None, failure policies, TRL compatibility, async rewards."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import pytest

from rlvf.api.rewards import MixEntry, RewardMix, RewardSpec, mix_from_config
from rlvf.config import RewardConfig
from rlvf.errors import RewardError
from rlvf.plugins import get_registry


@pytest.fixture(autouse=True, params=["local", pytest.param("ray", marks=pytest.mark.ray)])
def executor(request, monkeypatch):
    """Every test here runs twice: with the rewards called in this process, and with each reward of every mix
    moved into a Ray actor (reward.executor = "ray") on a local `ray start --head` cluster."""
    if request.param == "local":
        yield "local"
        return
    request.getfixturevalue("ray_cluster")
    from rlvf.engine.executors import RayReward

    created: list[RayReward] = []
    build_mix = RewardMix.__init__

    def with_ray_actors(self, entries, *args, **kwargs):
        moved = []
        for entry in entries:
            created.append(RayReward(lambda function=entry.function: function, name=entry.name, num_cpus=0))
            moved.append(dataclasses.replace(entry, function=created[-1]))
        build_mix(self, moved, *args, **kwargs)

    monkeypatch.setattr(RewardMix, "__init__", with_ray_actors)
    yield "ray"
    for reward in created:
        reward.close()


def constant(values):
    def reward(prompts, completions, **columns):
        return list(values)
    return reward


def test_trl_style_function_is_called_with_keywords_and_works_unchanged():
    # The shape of TRL's documented reward functions: only `completions` named, the rest in **kwargs.
    def reward_len(completions, **kwargs):
        return [-abs(20 - len(completion)) for completion in completions]

    result = RewardMix([MixEntry("reward_len", reward_len)]).score(["p", "p"], ["a" * 20, "a" * 25])
    assert result.per_reward["reward_len"] == [0.0, -5.0]


def test_sum_weights_rewards_and_leaves_out_none():
    mix = RewardMix([MixEntry("a", constant([1.0, 0.0, None]), weight=2.0),
                     MixEntry("b", constant([0.5, None, None]), weight=-1.0)])
    result = mix.score(["p"] * 3, ["c"] * 3)
    assert result.total == [1.5, 0.0, None]
    assert result.per_reward == {"a": [1.0, 0.0, None], "b": [0.5, None, None]}
    metrics = result.metrics()
    assert metrics["reward/a/mean"] == 0.5 and metrics["reward/b/applicable"] == pytest.approx(1 / 3)


def test_normalize_then_sum_standardises_each_reward_over_the_samples_it_applies_to():
    mix = RewardMix([MixEntry("a", constant([1, 0, 1, 0])), MixEntry("b", constant([2, None, 4, 6]), weight=0.5)],
                    aggregation="normalize_then_sum")
    total = mix.score(["p"] * 4, ["c"] * 4).total
    z = (6 - 4) / math.sqrt(8 / 3)  # b's values standardised: mean 4, population std sqrt(8/3)
    assert total == pytest.approx([1 - 0.5 * z, -1, 1, -1 + 0.5 * z], abs=1e-5)


def test_normalize_then_sum_within_groups():
    mix = RewardMix([MixEntry("a", constant([0, 1, 10, 30]))], aggregation="normalize_then_sum")
    total = mix.score(["p"] * 4, ["c"] * 4, group_ids=[0, 0, 1, 1]).total
    assert total == pytest.approx([-1, 1, -1, 1], abs=1e-5)
    # A group of equal rewards (0.1 is inexact in binary) standardises to exactly 0: no phantom signal.
    flat = RewardMix([MixEntry("a", constant([0.1] * 7))], aggregation="normalize_then_sum")
    assert flat.score(["p"] * 7, ["c"] * 7, group_ids=[0] * 7).total == [0.0] * 7


def test_raise_policy_names_the_reward_and_the_sample():
    def fragile(prompts, completions, **columns):
        return [1.0 / len(c) for c in completions]  # ZeroDivisionError on the empty completion

    with pytest.raises(RewardError, match=r"reward 'fragile' failed on sample 2: ZeroDivisionError") as info:
        RewardMix([MixEntry("fragile", fragile)]).score(["p"] * 3, ["ab", "a", ""])
    assert info.value.sample == 2


def test_zero_policy_scores_only_failing_samples_zero_and_counts_them():
    def fragile(prompts, completions, **columns):
        return [1.0 / len(c) for c in completions]

    result = RewardMix([MixEntry("fragile", fragile, on_error="zero")]).score(["p"] * 4, ["ab", "", "a", ""])
    assert result.per_reward["fragile"] == [0.5, 0.0, 1.0, 0.0]
    assert result.failures == {"fragile": 2}
    assert result.metrics()["reward/fragile/failures"] == 2.0


@pytest.mark.parametrize("bad, message", [
    ([1.0], "returned 1 values for 2 completions"),
    ([1.0, float("nan")], "returned nan; use None"),
    ([1.0, "yes"], "returned 'yes'; expected a float or None"),
    (0.5, "returned float; expected a list"),
])
def test_unusable_return_values_are_errors_naming_the_reward(bad, message):
    with pytest.raises(RewardError, match=message):
        RewardMix([MixEntry("bad", constant(bad) if isinstance(bad, list) else (lambda **kw: bad))]).score(
            ["p"] * 2, ["c"] * 2)


def test_async_rewards_run_concurrently_with_sync_ones():
    started = []

    async def slow(prompts, completions, **columns):
        started.append(len(started))
        await asyncio.sleep(0.2)
        return [1.0] * len(completions)

    mix = RewardMix([MixEntry("s1", slow), MixEntry("s2", slow), MixEntry("sync", constant([0.0, 2.0]))])
    loop_time = asyncio.new_event_loop().time
    begin = loop_time()
    result = mix.score(["p"] * 2, ["c"] * 2)
    assert result.total == [2.0, 4.0]
    assert loop_time() - begin < 0.39  # two 0.2 s rewards overlapped (a sequential run takes 0.4 s)


def test_async_reward_failure_is_located_too():
    async def fragile(prompts, completions, **columns):
        return [1.0 / len(c) for c in completions]

    with pytest.raises(RewardError, match="failed on sample 1"):
        RewardMix([MixEntry("fragile", fragile)]).score(["p"] * 2, ["a", ""])


def test_columns_reach_the_reward_and_lengths_are_checked():
    def echo(prompts, completions, answer, **columns):
        return [float(a) for a in answer]

    assert RewardMix([MixEntry("echo", echo)]).score(["p"] * 2, ["c"] * 2, answer=["1", "2"]).total == [1.0, 2.0]
    with pytest.raises(RewardError, match="column 'answer' has 1 values for 2 completions"):
        RewardMix([MixEntry("echo", echo)]).score(["p"] * 2, ["c"] * 2, answer=["1"])


class Threshold:
    """1.0 above a threshold."""

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold
        self.calls = 0

    def __call__(self, prompts, completions, score, **columns):
        self.calls += 1
        return [float(s > self.threshold) for s in score]

    def pop_metrics(self):
        calls, self.calls = self.calls, 0
        return {"calls": calls}


def test_class_rewards_take_options_and_report_metrics():
    spec = RewardSpec.from_callable(Threshold, plugin="test")
    assert spec.name == "Threshold" and spec.description == "1.0 above a threshold."
    assert spec.options() == {"threshold": 0.5}
    reward = spec.build(threshold=0.8)
    result = RewardMix([MixEntry("t", reward)]).score(["p"] * 2, ["c"] * 2, score=[0.7, 0.9])
    assert result.total == [0.0, 1.0]
    assert result.metrics()["reward/t/calls"] == 1.0
    with pytest.raises(RewardError, match="has no option 'treshold'; its options are: threshold"):
        spec.build(treshold=0.8)


def test_function_rewards_take_no_options():
    spec = RewardSpec.from_callable(constant([1.0]), name="one")
    with pytest.raises(RewardError, match="takes no options"):
        spec.build(x=1)


def test_a_mix_rejects_duplicates_and_emptiness():
    with pytest.raises(RewardError, match="appears twice"):
        RewardMix([MixEntry("a", constant([1])), MixEntry("a", constant([1]))])
    with pytest.raises(RewardError, match="at least one"):
        RewardMix([])


def test_mix_from_config_uses_installed_plugins_aliases_and_task_defaults():
    registry = get_registry()
    config = RewardConfig.model_validate({"mix": {"boxed": 0.5, "exact": {"reward": "qa_exact", "weight": 2}}})
    mix = mix_from_config(config, registry)
    result = mix.score(["p"], ["so \\boxed{Paris}"], answer=["paris"])
    assert result.per_reward == {"boxed": [1.0], "exact": [1.0]} and result.total == [2.5]
    defaults = mix_from_config(RewardConfig(), registry, default_rewards={"boxed": 1.0})
    assert defaults.names == ["boxed"]
    with pytest.raises(RewardError, match="no rewards"):
        mix_from_config(RewardConfig(), registry)


def test_a_batch_error_that_vanishes_sample_by_sample_is_counted_and_reported_once(capsys):
    """Before, a reward that raised on a batch and then succeeded on each sample left no trace (failures 0)."""
    def picky(prompts, completions, **columns):
        if len(completions) > 1:
            raise ValueError("batch too big")
        return [1.0]

    async def picky_async(prompts, completions, **columns):
        return picky(prompts, completions)

    mix = RewardMix([MixEntry("picky", picky), MixEntry("picky_async", picky_async),
                     MixEntry("fine", constant([0.5, 0.5, 0.5]))])
    result = mix.score(["p"] * 3, ["a", "b", "c"])
    assert result.per_reward["picky"] == [1.0, 1.0, 1.0] and result.failures == {}
    assert result.retries == {"picky": 1, "picky_async": 1}
    metrics = result.metrics()
    assert metrics["reward/picky/retries"] == 1.0 and metrics["reward/fine/retries"] == 0.0
    warned = capsys.readouterr().err
    assert "reward 'picky' raised on a batch of 3 (ValueError: batch too big)" in warned
    assert "reward 'picky_async' raised on a batch of 3" in warned
    assert mix.score(["p"] * 3, ["a", "b", "c"]).retries == {"picky": 1, "picky_async": 1}
    assert "raised on a batch" not in capsys.readouterr().err  # the warning comes once per reward


def test_chat_prompts_give_rewards_chat_completions():
    def form(prompts, completions, **columns):  # 1.0: TRL's conversational completion, 0.0: a string
        return [1.0 if c == [{"role": "assistant", "content": "a"}] else 0.0 if c == "a" else -1.0
                for c in completions]

    chat = [{"role": "user", "content": "hi"}]
    completions = ["a", [{"role": "assistant", "content": "a"}], {"role": "assistant", "content": "a"}]
    result = RewardMix([MixEntry("form", form)]).score([chat, "hi", chat], completions)
    assert result.per_reward["form"] == [1.0, 0.0, 1.0]
