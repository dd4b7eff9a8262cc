"""reward.executor = "ray": a mix built from config runs each reward in Ray actors and gives what the local one gives.

The reward tests themselves (test_rewards.py, test_code_reward.py) run with both executors; these cover the config
route: registered rewards built on the actors, a batch split between several actors, errors of the build.
"""

from __future__ import annotations

import shutil

import pytest

from rlvf.api.rewards import mix_from_config
from rlvf.config import RewardConfig
from rlvf.errors import RewardError
from rlvf.plugins import get_registry

pytestmark = pytest.mark.ray

ADD_TESTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0"]


def config(executor: str, address: str | None = None, **mix) -> RewardConfig:
    return RewardConfig.model_validate({"executor": executor, "mix": mix,
                                        "ray": {"address": address, "actors": 2, "num_cpus": 0}})


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
@pytest.mark.timeout(120)
def test_a_code_mix_on_two_ray_actors_scores_as_the_local_one(ray_cluster):
    programs = ["def add(a, b):\n    return a + b", "def add(a, b):\n    return a + b if a > 0 else 7",
                "def add(a, b):\n    return 2", "```python\ndef add(a, b):\n    return b + a\n```",
                "no code at all (", "x = 1"]
    completions = [f"{p}\n# {i}" for i, p in enumerate(programs)] + ["\\boxed{3}"]
    columns = {"tests": [ADD_TESTS] * (len(completions) - 1) + [None], "answer": ["3"] * len(completions)}
    mix = {"code": {"options": {"timeout": 2, "workers": 1}}, "boxed": 0.5}
    results = {}
    for executor in ("local", "ray"):
        built = mix_from_config(config(executor, ray_cluster, **mix), get_registry())
        try:
            results[executor] = built.score(["p"] * len(completions), completions,
                                            group_ids=[0, 0, 0, 1, 1, 1, 1], **columns)
        finally:
            for entry in built.entries:
                getattr(entry.function, "close", lambda: None)()
        if executor == "ray":
            assert type(built.entries[0].function).__name__ == "RayReward"
    local, remote = results["local"], results["ray"]
    assert remote.per_reward == local.per_reward and remote.total == local.total
    assert local.per_reward["code"][:3] == [1.0, pytest.approx(2 / 3), 0.0]
    timing = ("reward/code/sandbox_seconds",)
    assert {k: v for k, v in remote.metrics().items() if k not in timing} == \
        {k: v for k, v in local.metrics().items() if k not in timing}  # counters summed over the two actors


def test_a_failing_reward_on_ray_actors_follows_the_mix_policies(ray_cluster):
    registry = get_registry()
    # `qa_exact` needs an `answer` column: without it every sample fails, named, or scored 0 and counted.
    with pytest.raises(RewardError, match=r"reward 'exact' failed on sample 0: "):
        mix_from_config(config("ray", ray_cluster, exact={"reward": "qa_exact"}), registry).score(["p"] * 3, ["a"] * 3)
    zeroed = mix_from_config(config("ray", ray_cluster, exact={"reward": "qa_exact", "on_error": "zero"}), registry)
    result = zeroed.score(["p"] * 3, ["a"] * 3)
    assert result.per_reward == {"exact": [0.0, 0.0, 0.0]} and result.failures == {"exact": 3}


def test_a_bad_option_is_reported_before_any_actor_runs(ray_cluster):
    with pytest.raises(RewardError, match=r"has no option 'timout'; its options are: .*timeout"):
        mix_from_config(config("ray", ray_cluster, code={"options": {"timout": 2}}), get_registry())


@pytest.mark.timeout(120)
def test_training_with_rewards_on_ray_logs_what_local_rewards_give(ray_cluster, char_model_dir, tmp_path):
    import json

    from rlvf.config import load_config
    from rlvf.stages.rl import Trainer

    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}"}) + "\n" for i in range(8)))
    logged = {}
    for executor in ("local", "ray"):
        values = {"model.name": str(char_model_dir), "task.name": "toy", "task.dataset": str(data), "task.chat": False,
                  "task.template": "{question}:", "reward.executor": executor, "reward.ray.address": ray_cluster,
                  "reward.ray.actors": 2, "reward.ray.num_cpus": 0, "sampling.sampler": "hf",
                  "sampling.max_new_tokens": 12, "eval.max_new_tokens": 12, "eval.limit": 4,
                  "train.output_dir": str(tmp_path / executor), "train.report_to": ["jsonl"], "train.progress": False,
                  "train.eval_before": False, "train.steps": 2, "train.save_every": 0, "train.prompts_per_step": 2,
                  "train.group_size": 4, "train.lr": 1e-2, "algorithm.beta": 0.0}
        mix = ["reward.mix.repetition.options={ngram=2}", "reward.mix.overlong.options={max_length=8, buffer=4}"]
        trainer = Trainer(load_config(None, [f"{k}={json.dumps(v)}" for k, v in values.items()] + mix), get_registry())
        results = trainer.run()
        records = [json.loads(line) for line in (tmp_path / executor / "metrics.jsonl").read_text().splitlines()]
        logged[executor] = ([{k: v for k, v in r.items() if not k.startswith(("time/", "tokens_per_second"))}
                             for r in records], results["after"])
        for entry in trainer.mix.entries:
            getattr(entry.function, "close", lambda: None)()
    assert logged["ray"] == logged["local"]
    assert any(r.get("reward/overlong/mean", 0) < 0 for r in logged["local"][0])  # the rewards gave a signal
