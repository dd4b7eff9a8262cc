"""Math tasks whose rows carry an `answer` column for the `math` reward (plugin rlvf-math)."""

from __future__ import annotations

import json
import random
from importlib import resources
from typing import Any

from rlvf.api import ConfigError, DatasetTask, Task, split_held_out

BOXED_INSTRUCTION = "Put the final answer in \\boxed{}."


class ReasoningGymTask(Task):
    """Rows from an offline `reasoning-gym` generator, seeded; eval rows never appear in train."""

    generator: str = ""
    generator_options: tuple[str, ...] = ()  # task options forwarded to the generator's config

    def _generate(self, size: int, seed: int) -> list[dict[str, Any]]:
        import reasoning_gym  # imported on use: it takes ~1 s

        config = {k: v for k, v in self.options.items() if k in self.generator_options}
        dataset = reasoning_gym.create_dataset(self.generator, size=size, seed=seed, **config)
        return [{"question": item["question"], "answer": str(item["answer"])} for item in dataset]

    def load(self, split: str) -> list[dict[str, Any]]:
        # One pool of distinct questions, split in two: train and eval never share a question and follow the
        # same distribution. (Twice what is needed is generated: duplicates are dropped.)
        train_size, eval_size = self.options["train_size"], self.options["eval_size"]
        pool = _unique(self._generate(2 * (train_size + eval_size), self.options["seed"]))
        # Frequent questions are first seen early in the stream: shuffle, or eval would get the easy ones.
        random.Random(self.options["seed"]).shuffle(pool)
        return pool[:eval_size] if split == "eval" else pool[eval_size: eval_size + train_size]


def _unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen = set()
    out = []
    for row in rows:
        if row["question"] not in seen:
            seen.add(row["question"])
            out.append(row)
    return out


class ArithmeticTask(ReasoningGymTask):
    name = "arithmetic"
    description = "integer arithmetic expressions (reasoning-gym basic_arithmetic); answer in \\boxed{}"
    generator = "basic_arithmetic"
    generator_options = ("min_terms", "max_terms", "min_digits", "max_digits", "operators", "allow_parentheses",
                         "allow_negation")
    template = "Calculate {expression}. " + BOXED_INSTRUCTION
    few_shot = [("Calculate 4 + 5. " + BOXED_INSTRUCTION, "4 + 5 = 9. The answer is \\boxed{9}.")]
    default_rewards = {"math": 1.0, "boxed": 0.1}
    options = {
        "train_size": 2000, "eval_size": 100, "seed": 0,
        "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "operators": ["+", "-", "*"],
        "allow_parentheses": False, "allow_negation": False,
    }

    def _generate(self, size: int, seed: int) -> list[dict[str, Any]]:
        rows = super()._generate(size, seed)
        for row in rows:  # reasoning-gym words it "Calculate X."; keep the expression for our template
            row["expression"] = row["question"].removeprefix("Calculate ").rstrip(".")
        return rows


class GSMSymbolicTask(ReasoningGymTask):
    name = "gsm_symbolic"
    description = "grade-school word problems from 100 GSM8K templates (reasoning-gym gsm_symbolic)"
    generator = "gsm_symbolic"
    template = "{question}\n" + BOXED_INSTRUCTION
    default_rewards = {"math": 1.0, "boxed": 0.1}
    options = {"train_size": 2000, "eval_size": 100, "seed": 0}


class ChampTask(Task):
    """The 270 competition problems of `champ-dataset` with their final answers; a seeded held-out split."""

    name = "champ"
    description = "270 competition math problems with final answers (champ-dataset)"
    template = "{question}\n" + BOXED_INSTRUCTION
    default_rewards = {"math": 1.0, "boxed": 0.1}
    options = {"eval_fraction": 0.2, "seed": 0}

    def load(self, split: str) -> list[dict[str, Any]]:
        data = json.loads(resources.files("champ_dataset").joinpath("dataset_files/v0.json").read_text())
        rows = [{"question": p["_text"], "answer": p["_answer"], "category": p["category"], "id": p["identifier"]}
                for p in data["problems"].values()]
        return split_held_out(rows, split, self.options["eval_fraction"], self.options["seed"])


def gsm8k_final_answer(solution: str) -> str:
    """The number after GSM8K's '####' marker, without thousands separators."""
    if "####" not in solution:
        raise ValueError(f"no '#### answer' line in {solution[-80:]!r}")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


class GSM8KFormatTask(Task):
    """Any `datasets` source in GSM8K's layout (`question`, `answer` ending in '#### N'), e.g. the hub's
    openai/gsm8k (`dataset = "openai/gsm8k"`, `dataset_config = "main"`) or a local JSONL file."""

    name = "gsm8k"
    description = "any datasets source in GSM8K layout (question / answer with '#### N'); set options.dataset"
    template = "{question}\n" + BOXED_INSTRUCTION
    default_rewards = {"math": 1.0, "boxed": 0.1}
    options = {"dataset": None, "dataset_config": None, "train_split": "train", "eval_split": "test",
               "eval_fraction": 0.1, "seed": 0}

    def load(self, split: str) -> list[dict[str, Any]]:
        o = self.options
        if not o["dataset"]:
            raise ConfigError("task 'gsm8k' needs options.dataset: a hub id (openai/gsm8k) or a local file/dir")
        source = DatasetTask(self.name, o["dataset"], dataset_config=o["dataset_config"], train_split=o["train_split"],
                             eval_split=o["eval_split"], eval_fraction=o["eval_fraction"], seed=o["seed"])
        rows = []
        for index, row in enumerate(source.load(split)):
            try:
                answer = gsm8k_final_answer(row["answer"])
            except (KeyError, ValueError) as exc:
                raise ConfigError(f"task 'gsm8k': row {index} of {split} in {o['dataset']}: {exc}") from None
            rows.append({**row, "solution": row["answer"], "answer": answer})
        return rows
