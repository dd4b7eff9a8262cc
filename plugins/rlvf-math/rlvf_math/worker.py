"""A verification worker: `python -m rlvf_math.worker`, one JSON task per stdin line, one result per line.

A plain subprocess (not multiprocessing) so that it never re-imports the trainer's `__main__` and can be
started from any thread; the parent kills it when a verification overruns its deadline.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
MEMORY_LIMIT_BYTES = 4 * 1024**3  # a runaway verification fails with MemoryError instead of swapping


def _limit_memory() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass


def _die_with_parent() -> None:
    """A worker stuck in a long computation must not outlive a parent that died without stopping it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    parent = os.getppid()

    def watch() -> None:  # where prctl is missing (not Linux)
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # nothing but results may reach the protocol stream
    _die_with_parent()
    _limit_memory()
    from rlvf_math.verify import verify_answers  # imports sympy: the slow part of starting

    protocol.write('{"ready": true}\n')
    protocol.flush()
    for line in sys.stdin:
        task = json.loads(line)
        try:
            verdict = verify_answers(task["gold"], task["pred"], task["rel_tol"], task["allow_unevaluated"])
            result = {"correct": verdict.correct, "parse_failure": verdict.parse_failure}
        except Exception as exc:  # a verification error scores 0; the worker lives on
            result = {"correct": False, "parse_failure": True, "error": f"{type(exc).__name__}: {exc}"[:200]}
        protocol.write(json.dumps(result) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
