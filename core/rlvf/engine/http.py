"""HTTP calls with retries, for every client of a server rlvf talks to (the vLLM server sampler, the judge's
server backend): one schedule, one rule for what is worth retrying.

A call is `send() -> (body, None)` on success, `(None, why)` for a failure worth retrying (no connection, a
timeout, 408, 429, 5xx), and raises for the rest (a 4xx: the request is wrong and would be wrong again).
Attempt k (from 0) that fails waits `backoff * 2**k` seconds, at most `max_wait`, before the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def retryable_status(status: int) -> bool:
    """Whether an HTTP status may succeed when asked again: a timeout, rate limiting or a server error."""
    return status in (408, 429) or status >= 500


@dataclass(frozen=True)
class Retries:
    retries: int = 3  # attempts after the first
    backoff: float = 1.0  # seconds before the first retry; doubled for each next one
    max_wait: float = 30.0

    def __post_init__(self):
        if self.retries < 0 or self.backoff < 0 or self.max_wait < 0:
            raise ValueError("retries, backoff and max_wait must be >= 0")

    def wait(self, attempt: int) -> float:
        return min(self.backoff * 2 ** attempt, self.max_wait)


class RetriesExhausted(Exception):
    """Every attempt failed with a retryable error; `why` is the last one's."""

    def __init__(self, why: str, attempts: int):
        super().__init__(f"{why} (after {attempts} attempt(s))")
        self.why, self.attempts = why, attempts


def call_with_retries(send: Callable[[], tuple[T | None, str | None]], policy: Retries,
                      on_retry: Callable[[], Any] | None = None) -> T:
    """`send()` until it succeeds; RetriesExhausted after `policy.retries + 1` retryable failures."""
    why = ""
    for attempt in range(policy.retries + 1):
        body, why = send()
        if why is None:
            return body
        if attempt < policy.retries:
            if on_retry is not None:
                on_retry()
            time.sleep(policy.wait(attempt))
    raise RetriesExhausted(why, policy.retries + 1)


async def acall_with_retries(send: Callable[[], Awaitable[tuple[T | None, str | None]]], policy: Retries,
                             on_retry: Callable[[], Any] | None = None) -> T:
    """call_with_retries for a coroutine `send`."""
    why = ""
    for attempt in range(policy.retries + 1):
        body, why = await send()
        if why is None:
            return body
        if attempt < policy.retries:
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(policy.wait(attempt))
    raise RetriesExhausted(why, policy.retries + 1)
