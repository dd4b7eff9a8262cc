"""Math tasks whose rows carry an `answer` column for the `math` reward (plugin rlvf-math)."""

from __future__ import annotations

from typing import Any

from rlvf.tasks import Task

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
        # Generate twice what is needed: duplicates, and train rows that repeat an eval question, are dropped.
        seed, eval_size = self.options["seed"], self.options["eval_size"]
        eval_rows = _unique(self._generate(2 * eval_size, seed + 1), set())[:eval_size]
        if split == "eval":
            return eval_rows
        held_out = {row["question"] for row in eval_rows}
        train_size = self.options["train_size"]
        return _unique(self._generate(2 * train_size, seed), held_out)[:train_size]


def _unique(rows: list[dict[str, Any]], exclude: set[str]) -> list[dict[str, Any]]:
    seen = set(exclude)
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
