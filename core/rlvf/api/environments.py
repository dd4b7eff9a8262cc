"""Environments: tasks whose episodes take several turns.

With an environment (`[task] environment = "NAME"`), an episode is no longer one completion: after each model turn
the environment either ends the episode or returns an observation (a tool's output, feedback such as "wrong, try
again") that is appended to the context, and the model goes on, up to `max_turns` turns and `max_tokens` tokens
after the prompt. Tokens the environment inserted enter no loss and get no log-probs; rewards score the whole
episode.

A plugin registers an `Environment` through the hook `register_environments`; `start(row, context)` opens one
episode (an `Episode`) per completion:

    class Countdown(Environment):
        name = "countdown"
        options = {"max_turns": 3, "max_tokens": 256}

        def start(self, row, context):
            return CountdownEpisode(row)

    class CountdownEpisode(Episode):
        def step(self, text, finished):
            self.state["turns_seen"] = self.state.get("turns_seen", 0) + 1
            return None if "done" in text else Observation("not yet")

What rewards receive: `completions` are the episode's messages (the model's turns as "assistant" messages, the
observations with their role, "tool" for an inline one), so `completion_text` (the assistant texts joined) is only
what the model wrote and an environment's text never counts as the model's answer; and the columns
`environment_state` (each episode's `state`) and `turns` (its number of model turns), besides the row's columns.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from rlvf.errors import ConfigError

# roles of observations: "inline" text is appended to the model's own turn as it is (a tool's output inside the
# answer, as in tool-integrated reasoning); a chat role starts a new message through the model's chat template
ROLES = ("inline", "user", "tool")


@dataclass
class Observation:
    """What the environment says after a model turn: `text`, appended `inline` to the model's turn, or as a new
    message of `role` ("user", "tool") followed by a new assistant turn (chat prompts; a plain-text prompt gets
    the text appended as it is)."""

    text: str
    role: str = "inline"

    def __post_init__(self):
        if self.role not in ROLES:
            raise ConfigError(f"an observation's role must be one of {', '.join(ROLES)}, got {self.role!r}")


class EnvironmentContext:
    """What the core hands an environment when an episode starts: `score(row, text)` runs the task's accuracy
    reward (the one `eval.accuracy_reward` names) on a text as the model's answer to the row and returns its score
    (None: not applicable), e.g. for a feedback environment's verdict."""

    def __init__(self, score=None):
        self._score = score

    def score(self, row: dict[str, Any], text: str) -> float | None:
        if self._score is None:
            raise ConfigError("this environment needs the task's accuracy reward, which was not given to it")
        return self._score(row, text)


class Episode:
    """One episode: `step` is called after each model turn with the turn's text and whether the model ended it
    itself (an end-of-sequence token, as opposed to a stop string or the token limit); it returns the next
    Observation, or None when the episode is over. `state` (a dict of JSON-able values) is what rewards receive
    as `environment_state`; its numbers are averaged into `env/NAME` metrics. `close` frees what the episode
    holds (an interpreter)."""

    def __init__(self):
        self.state: dict[str, Any] = {}

    def step(self, text: str, finished: bool) -> Observation | None:
        raise NotImplementedError(f"{type(self).__name__} does not implement step(text, finished)")

    def close(self) -> None:
        pass


class Environment:
    """How a task's episodes go. Subclasses set the class attributes and override `start(row, context)`.

    `options` (with defaults) can be changed from config (`[task] environment_options`); `max_turns` (model turns
    per episode) and `max_tokens` (model and environment tokens after the prompt) are options of every
    environment. `stop`: extra stop strings that end a model turn (e.g. the closing fence of a code block).
    `system_prompt` and `few_shot` ((user, assistant) turns) are placed before the task's own prompt: how the model
    learns the protocol (a worked example of a tool call). `concurrency`: episodes stepped in parallel threads (an
    environment that waits on a sandbox or a server).
    """

    name: str = ""
    description: str = ""
    options: dict[str, Any] = {}
    stop: list[str] = []
    system_prompt: str | None = None
    few_shot: list[tuple[str, str]] = []
    concurrency: int = 1
    plugin: str = ""  # set by the registry: which distribution registered it

    COMMON_OPTIONS = {"max_turns": 4, "max_tokens": 512}

    def start(self, row: dict[str, Any], context: EnvironmentContext) -> Episode:
        raise NotImplementedError(f"environment '{self.name}' does not implement start(row, context)")

    def all_options(self) -> dict[str, Any]:
        return {**self.COMMON_OPTIONS, **self.options}

    def configured(self, **options: Any) -> Environment:
        """A copy with some options changed; unknown option names are rejected."""
        known = self.all_options()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"environment '{self.name}' has no option {', '.join(map(repr, unknown))}; "
                              f"its options are: {', '.join(sorted(known))}")
        environment = copy.copy(self)
        environment.options = {**self.options, **options}
        for name in ("max_turns", "max_tokens"):
            value = environment.option(name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"environment '{self.name}': option {name} must be a whole number >= 1, "
                                  f"got {value!r}")
        return environment

    def option(self, name: str) -> Any:
        return self.all_options()[name]
