"""Step-labelled rows with clean labels for `rlvf train-prm prm.dataset=...`: reference solutions of the
`multistep` task, half of them with one line's result changed by 1 to 3 (that line and every line after it
labelled wrong: the later lines compute on the wrong value), the others labelled right throughout.

    .venv/bin/python examples/prm/corrupted_solutions.py runs/prm_rows.jsonl --rows 300
"""

from __future__ import annotations

import argparse
import json
import random
import re

from rlvf.api import task_from_config
from rlvf.config import TaskConfig
from rlvf.plugins import get_registry

RESULT = re.compile(r"= (-?\d+)$")


def corrupted(solution: str, rng: random.Random) -> tuple[list[str], list[int]]:
    """The solution's lines with one result changed (propagated to where later lines use it), and the labels."""
    lines = solution.split("\n")
    operations = len(lines) - 1  # the last line states the answer
    wrong = rng.randrange(operations)
    old = RESULT.search(lines[wrong])[1]
    new = str(int(old) + rng.choice([-3, -2, -1, 1, 2, 3]))
    lines[wrong] = lines[wrong][: -len(old)] + new
    for later in range(wrong + 1, len(lines)):  # a later line reads the wrong value where it used the right one
        lines[later] = re.sub(rf"(?<!\d){old}(?!\d)", new, lines[later], count=1)
    return lines, [1] * wrong + [0] * (len(lines) - wrong)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output")
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--options", default='{"max_operand": 10, "max_operations": 2}', help="multistep options")
    args = parser.parse_args()
    task = task_from_config(TaskConfig(name="multistep", options=json.loads(args.options)), get_registry())
    rng = random.Random(args.seed)
    with open(args.output, "w", encoding="utf-8") as handle:
        for row in task.rows("train", limit=args.rows):
            if rng.random() < 0.5:
                steps, labels = corrupted(row["solution"], rng)
            else:
                steps, labels = row["solution"].split("\n"), [1] * (row["operations"] + 1)
            handle.write(json.dumps({"prompt": row["prompt"], "steps": steps, "labels": labels,
                                     "answer": row["answer"]}) + "\n")


if __name__ == "__main__":
    main()
