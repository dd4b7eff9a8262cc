"""`rlvf score`: score prompt/completion rows with a reward mix, one JSON object out per row in."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TextIO

from rlvf.api.rewards import RewardMix
from rlvf.errors import ConfigError, RewardError


@dataclass
class ScoreTotals:
    """Every reward's values over the rows (None: did not apply), and its failures and retries."""

    values: dict[str, list[float | None]]  # each reward's name, then "reward" (the mix)
    failures: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)

    def summary(self, mix: RewardMix) -> list[list[Any]]:
        """Rows of: name, weight (the aggregation for the mix), mean, min, max, scored, n/a, failures, retries."""
        weights = {entry.name: entry.weight for entry in mix.entries}
        rows = []
        for name, values in self.values.items():
            scored = [v for v in values if v is not None]
            rows.append([name, f"{weights[name]:g}" if name in weights else mix.aggregation,
                         f"{sum(scored) / len(scored):.4f}" if scored else "-",
                         f"{min(scored):.4f}" if scored else "-", f"{max(scored):.4f}" if scored else "-",
                         len(scored), len(values) - len(scored), self.failures.get(name, "-"),
                         self.retries.get(name, "-")])
        return rows


def check_columns(mix: RewardMix, rows: list[tuple[int, dict[str, Any]]], source: str) -> None:
    """A row without a column scores None ("does not apply"), but a column a reward declares it needs must be in
    some row, before any reward is called."""
    present = {key for _, row in rows for key in row}
    for entry in mix.entries:
        missing = [column for column in entry.needed_columns() if column not in present]
        if missing and rows:
            raise ConfigError(f"reward '{entry.name}' needs column '{missing[0]}', which no row of {source} has "
                              f"(they have: {', '.join(sorted(present))})")


def score_rows(mix: RewardMix, rows: list[tuple[int, dict[str, Any]]], output: TextIO, *, batch_size: int,
               source: str) -> ScoreTotals:
    """Score (line number, row) pairs in batches and write each row with one field per reward (named after it)
    and "reward" (the mix) to `output`; a reward error names the row's line of `source`."""
    check_columns(mix, rows, source)
    totals = ScoreTotals(values={name: [] for name in [*mix.names, "reward"]},
                         failures=dict.fromkeys(mix.names, 0), retries=dict.fromkeys(mix.names, 0))
    for start in range(0, len(rows), batch_size):
        batch = rows[start: start + batch_size]
        data = [row for _, row in batch]
        keys = {key for row in data for key in row} - {"prompt", "completion"}
        columns = {key: [row.get(key) for row in data] for key in sorted(keys)}
        try:
            result = mix.score([row.get("prompt", "") for row in data], [row["completion"] for row in data],
                               **columns)
        except RewardError as exc:
            where = f"{source}:{batch[exc.sample][0]}: " if exc.sample is not None else ""
            raise RewardError(f"{where}{exc}") from exc
        for i, row in enumerate(data):
            scored = {**row, **{name: values[i] for name, values in result.per_reward.items()},
                      "reward": result.total[i]}
            for name, steps in result.steps.items():  # a step reward: its reduction above, its steps here
                if steps[i] is not None:
                    scored[f"{name}_steps"] = [{"end": end, "score": score}
                                               for end, score in zip(steps[i].ends, steps[i].scores, strict=True)]
            output.write(json.dumps(scored, ensure_ascii=False) + "\n")
            for name, values in result.per_reward.items():
                totals.values[name].append(values[i])
            totals.values["reward"].append(result.total[i])
        for name, count in result.failures.items():
            totals.failures[name] += count
        for name, count in result.retries.items():
            totals.retries[name] += count
        output.flush()
    return totals
