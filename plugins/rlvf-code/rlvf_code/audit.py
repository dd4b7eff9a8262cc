"""Exploit families of code rows (rows with `tests`) for `rlvf audit`.

- `reference_solution` (gold): the row's reference program (HumanEval's `code_prompt` + `canonical_solution`,
  simple_functions' `reference`, MBPP's `code`) in a ```python block.
- `returns_none` (wrong): a function of the row's entry point that returns None.
- `special_cased_tests`: a function answering only the examples visible in the prompt (`>>> f(x)` doctests,
  `f(x) == y`, `f(x) ➞ y`, ...) and None otherwise. It solves nothing, but hidden tests that repeat the
  visible examples pass: any test-based reward pays for it in proportion to that overlap.
- `equality_spoofing`, `harness_tampering`, `test_reading`: the red-team programs of `rlvf_code.exploits`
  (but NOT_AUDITED's), grouped by how they try to pass (one completion per program, in EXPLOIT_GROUPS' order).

Every family applies to rows with function tests (HumanEval `check` source or assert statements) whose
function name is known (the `entry_point` column, else the function the asserts call); stdin/stdout rows get
only `reference_solution`.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Callable
from typing import Any

from rlvf_code.exploits import EXPLOITS
from rlvf_code.testcases import parse_tests

# Each red-team program in one family, by how it tries to pass.
EXPLOIT_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "equality_spoofing": ("returns an object that claims to equal anything (red-team programs: __eq__ overrides, "
                          "int/str/list subclasses, a spoofed __class__)",
                          ("always_equal", "int_subclass", "str_subclass", "list_subclass", "changing_iterator",
                           "class_spoof")),
    "harness_tampering": ("tampers with the test harness instead of solving (patched builtins and modules, frame "
                          "and gc walks, early exits, forged pass reports, signals, closed descriptors, a value "
                          "nested too deep to compare)",
                          ("patch_builtins", "patch_exec", "patch_test_modules", "frame_walk_report",
                           "frame_mutate_tests", "gc_walk", "early_exit", "exit_in_call", "fake_report",
                           "forked_writer", "atexit_hook", "signal_parent", "close_descriptors", "plant_module",
                           "recursion_bomb")),
    "test_reading": ("reads the hidden tests (frames, gc, files, its own memory) and answers exactly them",
                     ("read_tests", "memory_scan")),
}
# Too slow for an audit and unable to score (a timed-out or killed test fails): `hang` costs the reward's
# timeout once per test of every row, `huge_value` seconds per row. tests/test_code_redteam.py keeps checking them.
NOT_AUDITED = ("hang", "huge_value")

_PROGRAMS = {exploit.name: exploit for exploit in EXPLOITS}
# Reference solution columns, by task layout: a function body continuing `code_prompt` (HumanEval), or a
# whole program (simple_functions' `reference`, MBPP's `code`).
_BODY_COLUMN = "canonical_solution"
_PROGRAM_COLUMNS = ("reference", "code")


def fenced(program: str) -> str:
    """A completion as a model writes it: the program in one ```python block."""
    return f"```python\n{program.rstrip()}\n```"


def function_name(row: dict[str, Any]) -> str | None:
    """The function a row's tests call: its `entry_point`, else the first non-builtin function its asserts
    call; None for stdin/stdout rows, rows without tests, or tests that cannot be read."""
    tests = row.get("tests")
    if tests is None:
        return None
    try:
        suite = parse_tests(tests, row.get("entry_point"), 0)
    except ValueError:
        return None
    if suite.entry_point or not suite.statements:
        return suite.entry_point
    if row.get("entry_point"):
        return row["entry_point"]
    for statement in suite.statements:
        try:
            tree = ast.parse(statement)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and not hasattr(builtins, node.func.id)):
                return node.func.id
    return None


def reference_solution(audit_row) -> list[str]:
    """the row's reference solution (canonical_solution after code_prompt, reference, or code)"""
    row = audit_row.row
    if row.get("tests") is None:
        return []
    body = row.get(_BODY_COLUMN)
    if isinstance(body, str) and body.strip():
        return [fenced((row.get("code_prompt") or "") + body)]
    for column in _PROGRAM_COLUMNS:
        program = row.get(column)
        if isinstance(program, str) and program.strip():
            return [fenced(program)]
    return []


def returns_none(audit_row) -> list[str]:
    """a function of the row's entry point that returns None"""
    name = function_name(audit_row.row)
    return [fenced(f"def {name}(*args, **kwargs):\n    return None\n")] if name else []


# ---- special_cased_tests: the examples visible in the prompt ----

_DOCTEST = re.compile(r"^[ \t]*>>>[ \t]*(?P<call>.+?)[ \t]*\n[ \t]*(?P<expected>(?!>>>)\S.*)$", re.MULTILINE)
_ARROW = re.compile(r"[ \t]*(?:#[ \t]*)?(?:should return|returns|==>|=>|->|==|➞|→|=)[ \t]*")
_LOWERCASE_LITERALS = {"true": "True", "false": "False", "none": "None"}


def _literal(text: str) -> tuple[bool, Any]:
    text = _LOWERCASE_LITERALS.get(text.strip(), text.strip())
    try:
        return True, ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def _leading_literal(text: str) -> tuple[bool, Any]:
    """The longest literal at the start of `text` that ends at a word boundary (`5.` and `True if ...` give 5 and
    True; `1 + 9 = 10` gives nothing: an expression is not an example's value)."""
    text = text.strip().rstrip(".,;")
    for end in range(len(text), 0, -1):
        if end < len(text) and not (text[end].isspace() or text[end] in ".,;#("):
            continue
        ok, value = _literal(text[:end])
        rest = text[end:].strip()
        if ok and not (rest and rest[0] in "+-*/%=<>"):
            return True, value
    return False, None


def _call_arguments(call: str, name: str) -> tuple[bool, tuple]:
    """The literal positional arguments of `call` when it is exactly `name(literals...)`."""
    try:
        node = ast.parse(call.strip(), mode="eval").body
    except SyntaxError:
        return False, ()
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
            and not node.keywords):
        return False, ()
    try:
        return True, tuple(ast.literal_eval(argument) for argument in node.args)
    except (ValueError, SyntaxError, TypeError):
        return False, ()


def _closing_paren(text: str, open_at: int) -> int | None:
    depth, quote = 0, None
    for position in range(open_at, len(text)):
        char = text[position]
        if quote:
            if char == quote and text[position - 1] != "\\":
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                return position
        elif char == "\n":
            return None
    return None


def visible_examples(text: str, name: str) -> list[tuple[tuple, Any]]:
    """(arguments, expected value) of each example of `name` in `text` whose arguments and value are literals:
    doctests (`>>> f(1)` then `2`) and inline examples (`f(1) == 2`, `f(1) ==> 2`, `f(1) ➞ 2`, `f(1) returns
    2`, ...). The first example of each argument tuple wins."""
    examples: dict[str, tuple[tuple, Any]] = {}

    def add(call: str, expected: str) -> None:
        ok, arguments = _call_arguments(call, name)
        found, value = _leading_literal(expected) if ok else (False, None)
        if found:
            examples.setdefault(repr(arguments), (arguments, value))

    for match in _DOCTEST.finditer(text):
        add(match["call"], match["expected"])
    for match in re.finditer(rf"(?<![\w.]){re.escape(name)}\s*\(", text):
        close = _closing_paren(text, match.end() - 1)
        arrow = _ARROW.match(text, close + 1) if close is not None else None
        if arrow:
            line_end = text.find("\n", arrow.end())
            add(text[match.start(): close + 1], text[arrow.end(): None if line_end < 0 else line_end])
    return list(examples.values())


def prompt_text(prompt: Any) -> str:
    """What the model reads: the prompt string, or the contents of a conversation's messages."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return "\n".join(str(message.get("content", "")) for message in prompt if isinstance(message, dict))
    return ""


def special_cased_program(name: str, examples: list[tuple[tuple, Any]]) -> str:
    lines = [f"def {name}(*args, **kwargs):"]
    for arguments, value in examples:
        lines += [f"    if args == {arguments!r}:", f"        return {value!r}"]
    return "\n".join([*lines, "    return None", ""])


def special_cased_tests(audit_row) -> list[str]:
    """answers only the examples visible in the prompt, None otherwise (scores as far as hidden tests repeat them)"""
    row = audit_row.row
    name = function_name(row)
    if not name:
        return []
    examples = visible_examples(prompt_text(row.get("prompt")) or row.get("code_prompt") or "", name)
    return [fenced(special_cased_program(name, examples))] if examples else []


def red_team_family(program_names: tuple[str, ...]) -> Callable[[Any], list[str]]:
    def build(audit_row) -> list[str]:
        name = function_name(audit_row.row)
        return [fenced(_PROGRAMS[program].program(name)) for program in program_names] if name else []
    return build


def register_families(register) -> None:
    """Register every code family with `register(name, build, description, role)` (the register_exploits hook)."""
    register("reference_solution", reference_solution, role="gold")
    register("returns_none", returns_none, role="wrong")
    register("special_cased_tests", special_cased_tests,
             description="answers only the examples visible in the prompt, None otherwise: solves nothing, yet "
                         "scores wherever the hidden tests repeat the visible examples")
    for family, (description, program_names) in EXPLOIT_GROUPS.items():
        register(family, red_team_family(program_names), description=description)
