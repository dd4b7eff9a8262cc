"""The `feedback` environment: after a wrong answer the model is told so and tries again.

After each model turn the task's accuracy reward (`EnvironmentContext.score`, the reward `eval.accuracy_reward`
names, e.g. `math`) scores that turn's text as the answer: a correct one ends the episode; otherwise the next
message is always the same sentence, "That is not correct. Try again." (as a user message; appended as it is to
a plain-text prompt), up to `max_turns` attempts. The message depends on nothing but the verdict: it never holds
the answer or a hint derived from it.

State: `attempts` (turns the environment judged) and `solved` (one of them was correct). The core does not step
an episode's last turn (`max_turns`, or the token budget spent), so its verdict is only in the rewards, which score
the whole episode.
"""

from __future__ import annotations

from typing import Any

from rlvf.api import Environment, Episode, Observation

MESSAGE = "That is not correct. Try again."


class FeedbackEnvironment(Environment):
    name = "feedback"
    description = "retry after a wrong answer: the task's accuracy reward judges each turn, up to max_turns"
    options = {"max_turns": 3, "max_tokens": 512}

    def start(self, row: dict[str, Any], context) -> FeedbackEpisode:
        return FeedbackEpisode(row, context)


class FeedbackEpisode(Episode):
    def __init__(self, row: dict[str, Any], context):
        super().__init__()
        self.row, self.context = row, context
        # a plain-text prompt gets the sentence appended to the model's text: on lines of its own
        self.message = MESSAGE if isinstance(row.get("prompt"), list) else f"\n\n{MESSAGE}\n\n"
        self.state.update(attempts=0, solved=False)

    def step(self, text: str, finished: bool) -> Observation | None:
        from rlvf.api import CORRECT  # lazily: it imports the evaluation code (torch)

        self.state["attempts"] += 1
        score = self.context.score(self.row, text)
        if score is None:  # the accuracy reward does not apply to this row: there is nothing to retry
            return None
        if score >= CORRECT:
            self.state["solved"] = True
            return None
        return Observation(self.message, role="user")
