"""Small text helpers that reward plugins share, so each does not write its own."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or a TRL chat completion (a message or a list of messages, whose
    assistant contents are joined; a content may be a list of multimodal parts)."""
    if isinstance(completion, str):
        return completion
    if completion is None:
        return ""
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        texts = []
        for message in completion:
            if not isinstance(message, dict):
                texts.append(str(message))
            elif message.get("role", "assistant") == "assistant":
                content = message.get("content")
                if isinstance(content, list):
                    content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
                texts.append("" if content is None else str(content))
        return "".join(texts)
    raise TypeError(f"a completion must be a string or chat messages, got {type(completion).__name__}")


def final_turn_text(completion: Any) -> str:
    """The text of a completion's last assistant message (a string completion as it is): where a multi-turn
    episode's final answer is (rlvf.api.environments). An earlier turn's answer, e.g. a wrong first try before the
    environment's feedback, is not part of it; neither is any environment message."""
    if isinstance(completion, (list, tuple)):
        for message in reversed(completion):
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                return completion_text([message])
        return ""
    return completion_text(completion)


def is_conversational(prompt: Any) -> bool:
    """Whether a prompt is chat messages (a list of {"role", "content"} dicts), as TRL decides it."""
    return isinstance(prompt, (list, tuple)) and all(isinstance(m, dict) and "role" in m for m in prompt)


def as_reward_completion(prompt: Any, completion: Any) -> Any:
    """A completion in the form TRL passes it to reward functions, decided by its prompt: with a
    conversational prompt (chat messages), a list of messages (`[{"role": "assistant", "content": text}]`,
    so `completion[0]["content"]` works); with a string prompt, a string. A row with no prompt (`None` or `""`,
    e.g. in `rlvf score`) keeps the completion in the form it has."""
    if is_conversational(prompt) and prompt:
        if isinstance(completion, str):
            return [{"role": "assistant", "content": completion}]
        if isinstance(completion, dict):
            return [completion]
        if isinstance(completion, (list, tuple)):
            return list(completion)
        return [{"role": "assistant", "content": completion_text(completion)}]
    if prompt in (None, "") and isinstance(completion, (list, tuple, dict)):
        return [completion] if isinstance(completion, dict) else list(completion)
    return completion_text(completion)


def reward_completions(prompts: Sequence[Any], completions: Sequence[Any]) -> list[Any]:
    """Every completion of a batch as rewards receive it (`as_reward_completion`): one convention for the
    trainer, `rlvf eval`, `rlvf score` and pairs generation, since all of them score through `RewardMix.score`."""
    return [as_reward_completion(p, c) for p, c in zip(prompts, completions, strict=True)]


def last_boxed(text: str, commands: tuple[str, ...] = ("\\boxed", "\\fbox")) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`), nested braces included; None if absent
    or unclosed."""
    start = max(text.rfind(command + "{") for command in commands)
    if start < 0:
        return None
    open_at = text.index("{", start)
    depth = 0
    for position in range(open_at, len(text)):
        char = text[position]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1: position]
    return None


def wrong_number(answer: str, rng) -> str | None:
    """A different integer near an integer `answer` (a plausible slip: off by 1 to 10) with the same sign and number
    of digits where there is one, or None when the answer is not an integer. `rng` is a random.Random, so callers
    repeat exactly.

    The same shape matters: a reward model trained on hard negatives whose wrong answers were any nearby integer
    learned that a one-digit, non-negative answer is right (on one-digit arithmetic most wrong ones were negative or
    had two digits), and a policy then collected its reward with small wrong answers ("9 + 9 = 10")."""
    try:
        value = int(str(answer).strip())
    except ValueError:
        return None
    nearby = [value + delta for delta in range(-10, 11) if delta]
    same_shape = [n for n in nearby if (n < 0) == (value < 0) and len(str(abs(n))) == len(str(abs(value)))]
    return str(rng.choice(same_shape or nearby))


def with_final_answer_changed(completion: str, answer: str, rng) -> str | None:
    """A hard negative: `completion` (a verified-correct one) with every standalone occurrence of the integer
    `answer` replaced by a nearby wrong integer, so only its final answer differs (`7 * 8 = 56. The answer is
    \\boxed{56}.` -> `7 * 8 = 53. The answer is \\boxed{53}.`). None when the answer is not an integer or does
    not occur in the completion."""
    wrong = wrong_number(answer, rng)
    if wrong is None:
        return None
    changed, count = standalone_number(answer).subn(wrong, completion)
    return changed if count else None


def with_sign_dropped(completion: str, answer: str) -> str | None:
    """A hard negative for a negative integer `answer`: `completion` with every standalone occurrence of it written
    without its minus sign (`0 - 6 = -6. ... \\boxed{-6}` -> `0 - 6 = 6. ... \\boxed{6}`), the slip wrong_number's
    same-shape answers never show. None when the answer is not a negative integer or does not occur."""
    try:
        value = int(str(answer).strip())
    except ValueError:
        return None
    if value >= 0:
        return None
    changed, count = standalone_number(str(value)).subn(str(-value), completion)
    return changed if count else None


def standalone_number(number: str):
    """A regex of `number` where it stands alone: not part of a longer number (no digit, no decimal point followed
    by a digit, no minus sign before it; "56" is not found in "156", "56.5" or "-56")."""
    return re.compile(rf"(?<![\d-])(?<!\d\.){re.escape(str(number).strip())}(?!\d|\.\d)")
