"""The `python_tool` environment: tool-integrated reasoning with a Python interpreter in rlvf-sandbox.

The model writes a fenced ```python block; the turn ends at its closing fence (the stop string "```\\n"), the
block runs in the environment's `rlvf_sandbox.Sandbox`, and its output comes back inside the model's own turn
(an inline observation) as

    ```output
    <stdout, cut at max_output_chars; on an error also the traceback's last line>
    ```

after which the model goes on (more code, or its final answer). A turn that does not end with a closed python
block (the model answered, stopped, or ran out of tokens) ends the episode.

State: each block runs in a fresh interpreter by default. With `persistent = true` an episode's earlier blocks
are replayed (inside the sandbox, their output discarded, an error in one of them caught) before its new block,
so names defined earlier exist; blocks that timed out or were killed are not replayed. Replaying re-runs their
code: what they draw at random or read from the clock differs, and their time counts against the new block's
`timeout`. The model's code never runs outside the sandbox, the replay harness included.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
from typing import Any

from rlvf.api import ConfigError, Environment, Episode, Observation
from rlvf_sandbox import RunResult, Sandbox, parse_size

# An opening fence of a python block; the language is required, so that a bare "```" (the closing fence, or an
# ```output block) never opens one.
OPENING = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n")
CLOSING = "```"
# what the sandbox collects of a run's stdout and stderr before it stops the program (the observation shows less)
CAPTURE_LIMIT = "64K"

SYSTEM_PROMPT = ("You can run Python. To compute something, write a ```python block that prints the result; "
                 "its output is shown to you in an ```output block. Then give the final answer in \\boxed{}.")
# One worked tool call on an arithmetic question: short, so that a small model can copy its shape.
FEW_SHOT = [("Calculate 37 * 84. Put the final answer in \\boxed{}.",
             "```python\nprint(37 * 84)\n```\n```output\n3108\n```\nThe answer is \\boxed{3108}.")]


def final_code_block(text: str) -> str | None:
    """The code of the ```python block that closes at the very end of `text` (where the stop string ends a turn,
    or the model's end of turn right after a closing fence), or None: no block, a block followed by more text,
    or an empty one."""
    stripped = text.rstrip()
    if not stripped.endswith(CLOSING):
        return None
    body_end = len(stripped) - len(CLOSING)
    openings = list(OPENING.finditer(stripped, 0, body_end))
    if not openings:
        return None
    code = stripped[openings[-1].end():body_end]
    if CLOSING in code or not code.strip():  # the fence at the end closes some other block
        return None
    return code


class PythonToolEnvironment(Environment):
    name = "python_tool"
    description = ("the model's ```python blocks run in rlvf-sandbox; their output returns inline as an ```output "
                   "block (wraps any math task)")
    options = {
        "max_turns": 4,            # model turns: up to 3 tool calls, then the answer
        "max_tokens": 512,
        "timeout": 5.0,            # seconds of wall time per block
        "memory": "256M",          # per block
        "max_output_chars": 1000,  # of stdout shown to the model (and of the error line)
        "persistent": False,       # replay the episode's earlier blocks before each new one
        "workers": min(4, os.cpu_count() or 1),  # sandbox processes: blocks of different episodes in parallel
    }
    stop = ["```\n"]
    system_prompt = SYSTEM_PROMPT
    few_shot = FEW_SHOT
    concurrency = min(4, os.cpu_count() or 1)

    def __init__(self):
        self._sandbox: Sandbox | None = None
        self._lock = threading.Lock()

    def configured(self, **options: Any) -> PythonToolEnvironment:
        environment = super().configured(**options)
        environment._check_options()
        environment._sandbox, environment._lock = None, threading.Lock()  # its own sandbox, with its own limits
        environment.concurrency = environment.option("workers")
        return environment

    def _check_options(self) -> None:
        def bad(name: str, what: str):
            return ConfigError(f"environment 'python_tool': option {name} must be {what}, got "
                               f"{self.option(name)!r}")
        timeout = self.option("timeout")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise bad("timeout", "a number of seconds > 0")
        try:
            parse_size(self.option("memory"))
        except (ValueError, TypeError):
            raise bad("memory", 'a size such as "256M" or a number of bytes') from None
        for name in ("max_output_chars", "workers"):
            value = self.option(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "a whole number >= 1")
        if not isinstance(self.option("persistent"), bool):
            raise bad("persistent", "true or false")

    def start(self, row: dict[str, Any], context) -> PythonToolEpisode:
        return PythonToolEpisode(self)

    # ---- the sandbox: one per configured environment, started on the first block, closed at exit ----

    def sandbox(self) -> Sandbox:
        with self._lock:
            if self._sandbox is None:
                self._sandbox = Sandbox(timeout=float(self.option("timeout")), memory=self.option("memory"),
                                        workers=self.option("workers"), output_limit=CAPTURE_LIMIT)
                atexit.register(self.close)
            return self._sandbox

    def close(self) -> None:
        with self._lock:
            if self._sandbox is not None:
                self._sandbox.close()
                self._sandbox = None

    def run(self, earlier: list[str], code: str) -> RunResult:
        """Run `code` in the sandbox, after the `earlier` blocks (persistent mode) with their output discarded."""
        program = replay_program(earlier, code) if earlier else code
        return self.sandbox().run(program)

    def render(self, result: RunResult, turn_text: str) -> str:
        """The ```output block that follows a turn ending in a code block."""
        limit = self.option("max_output_chars")
        shown = cut(result.stdout_text, limit)
        if result.stdout_truncated or result.killed_by == "output_limit":
            shown = shown.rstrip("\n") + "\n... (output cut)" if shown else "... (output cut)"
        error = error_line(result, self.option("timeout"), self.option("memory"))
        if error:
            shown = (shown.rstrip("\n") + "\n" if shown.strip() else "") + cut(error, limit)
        if not shown.strip():
            shown = "(no output)"
        lead = "" if turn_text.endswith("\n") else "\n"
        return f"{lead}```output\n{shown.rstrip(chr(10))}\n```\n"


class PythonToolEpisode(Episode):
    def __init__(self, environment: PythonToolEnvironment):
        super().__init__()
        self.environment = environment
        self.blocks: list[str] = []  # persistent mode: the blocks replayed before the next one
        self.state.update(tool_calls=0, tool_errors=0, tool_timeouts=0)

    def step(self, text: str, finished: bool) -> Observation | None:
        code = final_code_block(text)
        if code is None:  # an answer, or a turn that ran out: the episode is over
            return None
        persistent = self.environment.option("persistent")
        result = self.environment.run(self.blocks if persistent else [], code)
        self.state["tool_calls"] += 1
        timed_out = result.timed_out or result.killed_by in ("timeout", "cpu_limit")
        if not result.ok:
            self.state["tool_errors"] += 1
        if timed_out:
            self.state["tool_timeouts"] += 1
        if persistent and result.killed_by is None:  # a block that hung or was killed is not replayed
            self.blocks.append(code)
        return Observation(self.environment.render(result, text), role="inline")


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


def error_line(result: RunResult, timeout: float, memory) -> str | None:
    """What went wrong, in one line (a traceback's last line), or None for a clean run."""
    if result.timed_out or result.killed_by == "timeout":
        return f"TimeoutError: the code ran longer than {timeout:g} s"
    if result.killed_by == "cpu_limit":
        return "TimeoutError: the code used more CPU time than allowed"
    if result.killed_by == "memory_limit":
        return f"MemoryError: the code used more than {memory} of memory"
    if result.killed_by == "worker_lost":
        return "SandboxError: the sandbox lost this run"
    if result.killed_by in (None, "output_limit", "file_size_limit") and result.exit_code == 0:
        return "OSError: the code wrote a file larger than allowed" if result.killed_by == "file_size_limit" else None
    lines = [line for line in result.stderr_text.splitlines() if line.strip()]
    if lines:
        return lines[-1].strip()
    if result.killed_by and result.killed_by.startswith("signal:"):
        return f"the code was killed by {result.killed_by.removeprefix('signal:')}"
    return f"SystemExit: {result.exit_code}"


# Runs inside the sandbox: the earlier blocks with stdout and stderr sent to /dev/null (at the descriptor level,
# so os.write(1, ...) is discarded too) and their errors caught, then the new block as the program's own code.
REPLAY = '''\
import os as _os, sys as _sys
_namespace = {{"__name__": "__main__", "__builtins__": __builtins__}}
_saved = (_os.dup(1), _os.dup(2))
_null = _os.open(_os.devnull, _os.O_WRONLY)
for _block in {earlier!r}:
    _os.dup2(_null, 1)
    _os.dup2(_null, 2)
    try:
        exec(compile(_block, "<earlier block>", "exec"), _namespace)
    except BaseException:
        pass
    finally:
        _sys.stdout.flush()
        _sys.stderr.flush()
        _os.dup2(_saved[0], 1)
        _os.dup2(_saved[1], 2)
del _block
exec(compile({code!r}, "<block>", "exec"), _namespace)
'''


def replay_program(earlier: list[str], code: str) -> str:
    return REPLAY.format(earlier=list(earlier), code=code)
