"""The order in which every stage reads its training data: a seeded reshuffle per pass, so the examples of any
position are known from (seed, position) alone and a resumed run reads exactly what an uninterrupted one does."""

from __future__ import annotations

import random
from functools import lru_cache


@lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, n: int) -> tuple[int, ...]:
    """The indices 0..n-1 in the order of pass `epoch` over the data."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return tuple(order)


def indices_at(seed: int, n: int, start: int, stop: int) -> list[int]:
    """The data indices at positions start..stop-1 of the stream of passes (position p: pass p // n)."""
    return [epoch_order(seed, epoch, n)[index] for epoch, index in (divmod(p, n) for p in range(start, stop))]
