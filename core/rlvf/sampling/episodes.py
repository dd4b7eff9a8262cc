"""Multi-turn episodes (rlvf.api.environments) on any sampler.

Each turn is one `Sampler.sample` call: the first samples `n` completions of each prompt (the prompt is prefilled
once per prompt, as for single-turn tasks), later ones continue each unfinished episode from its prompt and every
token so far. What a backend keeps between calls is reused: vLLM's prefix cache holds the prompt's and earlier
turns' KV, so a turn prefills only its new tokens; the HF sampler prefills each episode's context again.

An observation becomes tokens in one of two ways: `inline` text is tokenised and appended to the model's turn as it
is; a chat message (role "user" or "tool") is rendered by the model's chat template as what follows the model's
turn: the end of the assistant message (unless the model ended it with its end-of-turn token itself), the new
message, and the opening of the next assistant turn. Those tokens get log-prob 0 and `generated` 0, so they enter
no loss (rlvf.stages.rollout).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any

from rlvf.api.environments import Environment, EnvironmentContext, Episode, Observation
from rlvf.errors import ConfigError
from rlvf.sampling.base import Sampler, Samples, SamplingParams


def run_episodes(sampler: Sampler, tokenizer, environment: Environment, rows: list[dict[str, Any]],
                 prompt_ids: list[list[int]], params: SamplingParams, *, seed: int | None = None,
                 context: EnvironmentContext | None = None) -> Samples:
    """`params.n` episodes of each row (prompt-major, as Samples are), run in `environment` with `sampler`:
    Samples whose completions are everything after the prompt (model and environment tokens), with `generated`,
    `messages` and `states` set. `params.max_new_tokens` bounds each turn; the environment's `max_tokens` the
    episode, `max_turns` its model turns."""
    context = context or EnvironmentContext()
    max_turns, max_tokens = environment.option("max_turns"), environment.option("max_tokens")
    stops = list(dict.fromkeys([*params.stop, *environment.stop]))
    episodes: list[Episode] = []
    try:
        for index in range(len(rows) * params.n):
            episodes.append(environment.start(rows[index // params.n], context))
        total = len(episodes)
        chat = [isinstance(rows[i // params.n]["prompt"], list) for i in range(total)]
        ids: list[list[int]] = [[] for _ in range(total)]
        logprobs: list[list[float]] = [[] for _ in range(total)]
        generated: list[list[int]] = [[] for _ in range(total)]
        messages: list[list[dict]] = [[] for _ in range(total)]
        truncated = [False] * total
        active = list(range(total))
        eos = _eos_ids(sampler, tokenizer)
        for turn in range(max_turns):
            turn_seed = None if seed is None else seed + 1_000_033 * turn
            turn_params = dataclasses.replace(params, stop=stops, max_new_tokens=min(
                params.max_new_tokens, max(max_tokens - min(len(ids[e]) for e in active), 1)))
            if turn == 0:
                samples = sampler.sample(prompt_ids, turn_params, seed=turn_seed)
                turn_rows = list(range(total))
            else:
                samples = sampler.sample([prompt_ids[e // params.n] + ids[e] for e in active],
                                         dataclasses.replace(turn_params, n=1), seed=turn_seed)
                turn_rows = active
            stepping = []  # (episode, text, ended itself)
            for position, e in enumerate(turn_rows):
                new, lps, text = samples.completion_ids[position], samples.logprobs[position], samples.texts[position]
                room = max_tokens - len(ids[e])
                if len(new) > room:  # the episode's budget ends inside this turn: what follows was never sampled
                    new, lps, text = new[:room], lps[:room], tokenizer.decode(new[:room], skip_special_tokens=True)
                    truncated[e] = True
                else:
                    truncated[e] = samples.truncated[position]
                ids[e] += new
                logprobs[e] += lps
                generated[e] += [1] * len(new)
                messages[e].append({"role": "assistant", "content": text})
                if len(ids[e]) < max_tokens:  # room for another turn
                    stepping.append((e, text, bool(new) and new[-1] in eos))
            # the last turn is stepped too, so that the state counts it (a success on the last try); what the
            # environment would say next is dropped
            observations = _step_all(environment, episodes, stepping)
            if turn == max_turns - 1:
                break
            active = []
            for (e, _, ended), observation in zip(stepping, observations, strict=True):
                if observation is None:
                    continue
                inserted = observation_ids(tokenizer, observation, chat=chat[e], model_ended=ended, eos_ids=eos)
                if len(ids[e]) + len(inserted) >= max_tokens:  # no room left for the model to answer
                    truncated[e] = True
                    continue
                ids[e] += inserted
                logprobs[e] += [0.0] * len(inserted)
                generated[e] += [0] * len(inserted)
                messages[e].append({"role": "tool" if observation.role == "inline" else observation.role,
                                    "content": observation.text})
                active.append(e)
            if not active:
                break
        states = [dict(episode.state) for episode in episodes]
    finally:
        for episode in episodes:
            episode.close()
    texts = [tokenizer.decode(completion, skip_special_tokens=True) for completion in ids]
    return Samples(completion_ids=ids, logprobs=logprobs, texts=texts, truncated=truncated, n=params.n,
                   generated=generated, messages=messages, states=states)


def model_turns(messages: list[dict]) -> int:
    """An episode's model turns: its assistant messages."""
    return sum(message["role"] == "assistant" for message in messages)


def episode_stats(parts: list[Samples]) -> dict[str, float]:
    """Metrics of episodes (Samples of run_episodes, several parts: ranks): model turns, tokens the model sampled
    and the environment inserted, per episode; and the mean of each number the episodes' states hold, as
    `env/NAME` (e.g. env/tool_calls, env/tool_errors)."""
    turns, model, inserted, numbers = [], [], [], {}
    for samples in parts:
        for messages, flags, state in zip(samples.messages, samples.generated, samples.states, strict=True):
            turns.append(model_turns(messages))
            model.append(sum(flags))
            inserted.append(len(flags) - sum(flags))
            for name, value in state.items():
                if isinstance(value, (int, float)):  # booleans too: the fraction of episodes
                    numbers.setdefault(name, []).append(float(value))
    episodes = max(len(turns), 1)
    metrics = {"episode/turns": sum(turns) / episodes, "episode/model_tokens": sum(model) / episodes,
               "episode/environment_tokens": sum(inserted) / episodes}
    return metrics | {f"env/{name}": sum(values) / len(values) for name, values in sorted(numbers.items())}


def _step_all(environment: Environment, episodes: list[Episode], stepping) -> list[Observation | None]:
    """Each episode's reaction to its model turn, `environment.concurrency` at a time."""
    def step(item):
        e, text, ended = item
        observation = episodes[e].step(text, ended)
        if observation is not None and not isinstance(observation, Observation):
            raise ConfigError(f"environment '{environment.name}' ({environment.plugin or 'unregistered'}): step() "
                              f"returned {type(observation).__name__}; expected an rlvf.api.Observation or None")
        return observation
    if environment.concurrency <= 1 or len(stepping) <= 1:
        return [step(item) for item in stepping]
    with concurrent.futures.ThreadPoolExecutor(min(environment.concurrency, len(stepping))) as pool:
        return list(pool.map(step, stepping))


def _eos_ids(sampler, tokenizer) -> set[int]:
    configured = getattr(sampler, "eos_ids", None)
    return set(configured) if configured else {tokenizer.eos_token_id}


def observation_ids(tokenizer, observation: Observation, *, chat: bool, model_ended: bool,
                    eos_ids: set[int]) -> list[int]:
    """The tokens that put `observation` after a model turn (see the module's docstring)."""
    if observation.role == "inline" or not chat:
        return tokenizer(observation.text, add_special_tokens=False)["input_ids"]
    closing, opening = chat_turn_text(tokenizer, observation.role, observation.text)
    if model_ended:  # the model's end-of-turn token is already there: leave out its text
        for token in eos_ids:
            token_text = tokenizer.convert_ids_to_tokens(token)
            if isinstance(token_text, str) and closing.startswith(token_text):
                closing = closing[len(token_text):]
                break
    return tokenizer(closing + opening, add_special_tokens=False)["input_ids"]


def chat_turn_text(tokenizer, role: str, text: str) -> tuple[str, str]:
    """(what the chat template writes after an assistant message's content, then a `role` message holding `text`
    and the opening of the next assistant turn), read off the template on a probe conversation."""
    probe = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    try:
        before = tokenizer.apply_chat_template(probe, tokenize=False)
        after = tokenizer.apply_chat_template([*probe, {"role": role, "content": text}], tokenize=False,
                                              add_generation_prompt=True)
    except Exception as exc:
        raise ConfigError(f"the model's chat template cannot render a '{role}' message after an assistant turn "
                          f"({type(exc).__name__}: {exc}); use an inline observation or another role") from exc
    end = before.rfind("A") + 1
    if not end or not after.startswith(before):
        raise ConfigError(f"the model's chat template renders a '{role}' message by rewriting the conversation before "
                          "it, so its tokens cannot be appended to an episode; use an inline observation")
    return before[end:], after[len(before):]
