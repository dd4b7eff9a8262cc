"""Getting the program out of a completion."""

from __future__ import annotations

import re
from typing import Literal

Extraction = Literal["fence_or_text", "fence", "text"]
EXTRACTIONS = ("fence_or_text", "fence", "text")

# A fenced block; an unclosed fence runs to the end (a completion cut off at the token limit).
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE)
_PYTHON_TAGS = {"python", "py", "python3"}


def extract_code(text: str, mode: Extraction = "fence_or_text") -> str | None:
    """The last fenced Python block (```python, ```py or an untagged ``` if no tagged one), or the whole
    text when there is no fence and `mode` allows it. None when `mode="fence"` finds no block."""
    if mode not in EXTRACTIONS:
        raise ValueError(f"unknown extraction {mode!r}; choose one of {', '.join(EXTRACTIONS)}")
    if mode == "text":
        return text
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(text)]
    tagged = [body for tag, body in blocks if tag in _PYTHON_TAGS]
    untagged = [body for tag, body in blocks if not tag]
    if tagged or untagged:
        return (tagged or untagged)[-1]
    return text if mode == "fence_or_text" else None
