"""Small text helpers that reward plugins share, so each does not write its own."""

from __future__ import annotations

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
