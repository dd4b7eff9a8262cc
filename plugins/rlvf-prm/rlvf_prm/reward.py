"""The `prm` reward: per-step scores of a completion from a process reward model (`rlvf train-prm` output)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlvf.api import completion_text


class PRMReward:
    """p(step correct) for each step of each completion, from a process reward model (`rlvf train-prm` output),
    as rlvf.api.StepScores: one score per step and where in the completion's text each step ends. A completion
    is split into steps at `separator` (pieces of whitespace only are no step); a completion with no step (empty
    or whitespace) gets None.

    Options: `model` (required: the PRM's directory, `runs/prm/final`), `separator` (keep it the one the PRM was
    trained with, `prm.separator`), `batch_size` (sequences per forward pass), `max_length` (tokens; the prompt
    loses its beginning first, then steps that do not fit are not scored), `monotone` (default true: each
    step's score is at most every earlier step's, so that once a solution went wrong no later line scores it
    back up, whatever step_reduction the mix uses; false: each step's own p), `dtype` and `device` ("auto":
    bf16 on CUDA, else float32 on the CPU).

    What text cannot do, by construction (rlvf_prm.model): a step's own score never changes with the lines after
    it, and text appended to a step can only lower it.
    """

    def __init__(self, model: str | None = None, separator: str = "\n", batch_size: int = 16,
                 max_length: int = 1024, monotone: bool = True, dtype: str = "auto", device: str = "auto"):
        if not model:
            raise ValueError("the prm reward needs options.model, the process reward model's directory, e.g. "
                             'prm = { reward = "prm", options = { model = "runs/prm/final" } }')
        if not separator:
            raise ValueError("separator must not be empty")
        if batch_size <= 0 or max_length <= 1:
            raise ValueError("batch_size must be positive and max_length at least 2")
        self.path, self.separator, self.batch_size, self.max_length = model, separator, batch_size, max_length
        self.monotone = monotone
        from rlvf_prm.model import load_prm  # torch: only once the reward is built

        self.model, self.tokenizer = load_prm(model, dtype, device=None if device == "auto" else device)
        self._metrics: dict[str, float] = {}

    def step_probabilities(self, prompts: Sequence[Any], texts: Sequence[str]) -> list[list[float]]:
        """p(step correct) of each step of each text (fewer than its steps where max_length cut it)."""
        from rlvf_prm.model import encode_steps, step_probabilities
        from rlvf_prm.steps import split_steps

        encoded = [encode_steps(self.tokenizer, prompt, split_steps(text, self.separator), self.separator,
                                self.max_length) for prompt, text in zip(prompts, texts, strict=True)]
        return step_probabilities(self.model, [ids for ids, _ in encoded], [where for _, where in encoded],
                                  self.tokenizer.pad_token_id, self.batch_size)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list:
        from rlvf_prm.steps import step_ends

        texts = [completion_text(c) for c in completions]
        scored = [i for i, text in enumerate(texts) if step_ends(text, self.separator)]
        out: list = [None] * len(texts)
        if not scored:
            self._metrics = {"no_steps": float(len(texts))}
            return out
        from rlvf.api import StepScores
        probabilities = self.step_probabilities([prompts[i] for i in scored], [texts[i] for i in scored])
        steps, unscored = [], 0
        for i, values in zip(scored, probabilities, strict=True):
            ends = step_ends(texts[i], self.separator)
            unscored += len(ends) - len(values)
            if not values:  # not one step within max_length: nothing to score
                continue
            if self.monotone:
                values = [min(values[: k + 1]) for k in range(len(values))]
            out[i] = StepScores(scores=list(values), ends=ends[: len(values)])
            steps += values
        self._metrics = {"step_mean": sum(steps) / len(steps) if steps else 0.0,
                         "steps_per_completion": len(steps) / len(scored),
                         "no_steps": float(len(texts) - len(scored)), "unscored_steps": float(unscored)}
        return out

    def pop_metrics(self) -> dict[str, float]:
        """Statistics of the last batch: mean step score, steps per scored completion, completions with no step,
        steps past max_length."""
        metrics, self._metrics = self._metrics, {}
        return metrics
