"""`rlvf eval`: pass@1 and pass@k of a model on a task's split, scored with the reward mix."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rlvf.api.rewards import MixResult, RewardMix, check_task_columns
from rlvf.api.tasks import Task
from rlvf.config import EvalConfig
from rlvf.errors import ConfigError
from rlvf.models.loading import encode_prompts
from rlvf.sampling import Sampler, Samples, SamplingParams, model_sampler

CORRECT = 1.0 - 1e-6  # an accuracy reward counts a sample correct at 1.0 (all tests passed, answer equal)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if n < k:
        raise ConfigError(f"pass@{k} needs at least {k} samples per prompt, got n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def score_samples(mix: RewardMix, rows: list[dict[str, Any]], samples: Samples) -> tuple[list[dict], MixResult]:
    """Score the completions of task rows: each completion gets its row's columns (as TRL passes dataset
    columns), its token ids, and its prompt's index as the group of `normalize_then_sum`. An episode of an
    environment is scored as its messages, with the columns `environment_state` and `turns`
    (rlvf.api.environments)."""
    expanded = [rows[samples.prompt_index(i)] for i in range(len(samples.texts))]
    keys = {key for row in rows for key in row} - {"prompt"}
    columns = {key: [row.get(key) for row in expanded] for key in sorted(keys)}
    completions = samples.texts
    if samples.messages is not None:
        completions = samples.messages
        columns["environment_state"] = samples.states
        from rlvf.sampling.episodes import model_turns

        columns["turns"] = [model_turns(messages) for messages in samples.messages]
    result = mix.score([row["prompt"] for row in expanded], completions,
                       group_ids=[samples.prompt_index(i) for i in range(len(expanded))],
                       completion_ids=samples.completion_ids, **columns)
    return expanded, result


def sample_rows(sampler: Sampler, tokenizer, task: Task, rows: list[dict[str, Any]], prompt_ids: list[list[int]],
                params: SamplingParams, mix: RewardMix, accuracy_reward: str, seed: int | None = None) -> Samples:
    """`params.n` completions of each row's prompt (`prompt_ids`), or with a task environment (task.environment) as
    many episodes (rlvf.sampling.episodes), whose context scores a text with `accuracy_reward`."""
    if task.environment is None:
        return sampler.sample(prompt_ids, params, seed=seed)
    from rlvf.api.environments import EnvironmentContext
    from rlvf.sampling.episodes import run_episodes

    accuracy = RewardMix([next(e for e in mix.entries if e.name == accuracy_reward)])

    def score(row: dict[str, Any], text: str) -> float | None:
        columns = {key: [value] for key, value in row.items() if key != "prompt"}
        return accuracy.score([row["prompt"]], [text], **columns).per_reward[accuracy_reward][0]
    return run_episodes(sampler, tokenizer, task.environment, rows, prompt_ids, params, seed=seed,
                        context=EnvironmentContext(score))


@dataclass
class EvalReport:
    accuracy: float  # mean pass@1
    pass_at: dict[int, float]
    reward_means: dict[str, float]
    prompts: int
    samples: int
    rows: list[dict[str, Any]] = field(repr=False, default_factory=list)  # scored completions
    episodes: dict[str, float] = field(default_factory=dict)  # with an environment: turns, tokens, env/* means

    def summary(self) -> dict[str, float]:
        out = {"accuracy": self.accuracy, **{f"pass@{k}": v for k, v in self.pass_at.items()}}
        return out | {f"reward/{name}": v for name, v in self.reward_means.items()} | self.episodes


def evaluate(model, tokenizer, task: Task, mix: RewardMix, config: EvalConfig, seed: int = 0,
             sampler: Sampler | None = None) -> EvalReport:
    """Sample the split's prompts with `sampler` (default: the HF sampler on `model`) and score them."""
    accuracy_reward = config.accuracy_reward or mix.names[0]
    if accuracy_reward not in mix.names:
        raise ConfigError(f"eval.accuracy_reward '{accuracy_reward}' is not in the reward mix ({', '.join(mix.names)})")
    rows = task.rows(config.split, limit=config.limit)
    if not rows:
        raise ConfigError(f"task '{task.name}' has no rows in split '{config.split}'")
    check_task_columns(mix, task, rows=rows)
    if config.n > 1 and config.temperature <= 0:
        raise ConfigError(f"eval.n = {config.n} samples per prompt need eval.temperature > 0 (greedy repeats itself)")
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p,
                            max_new_tokens=config.max_new_tokens, n=config.n)
    sampler = sampler or model_sampler(model, tokenizer, batch_size=config.batch_size)
    samples = sample_rows(sampler, tokenizer, task, rows, encode_prompts(tokenizer, [r["prompt"] for r in rows]),
                          params, mix, accuracy_reward, seed=seed)
    expanded, result = score_samples(mix, rows, samples)
    correct = [(v or 0.0) >= CORRECT for v in result.per_reward[accuracy_reward]]
    per_prompt = [sum(correct[i * config.n:(i + 1) * config.n]) for i in range(len(rows))]
    pass_at = {k: sum(pass_at_k(config.n, c, k) for c in per_prompt) / len(rows) for k in config.k}
    reward_means = {}
    for name, values in [*result.per_reward.items(), ("mix", result.total)]:
        scored = [v for v in values if v is not None]
        if scored:
            reward_means[name] = sum(scored) / len(scored)
    scored_rows = [{**row, "completion": text, **{name: values[i] for name, values in result.per_reward.items()},
                    "reward": result.total[i], "correct": correct[i]}
                   for i, (row, text) in enumerate(zip(expanded, samples.texts, strict=True))]
    episodes = {}
    if samples.messages is not None:
        from rlvf.sampling.episodes import episode_stats

        episodes = episode_stats([samples])
        for row, messages, state in zip(scored_rows, samples.messages, samples.states, strict=True):
            row["messages"], row["environment_state"] = messages, state
    return EvalReport(accuracy=sum(correct) / len(correct), pass_at=pass_at, reward_means=reward_means,
                      prompts=len(rows), samples=len(correct), rows=scored_rows, episodes=episodes)
