"""A pool of verification worker processes with a hard deadline per verification.

Each calling thread checks workers out, sends one task to each and waits on their pipes; a worker that
overruns its deadline is killed and replaced lazily. No signals are used, so it works from any thread.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT = 120.0  # importing sympy on a loaded machine can take a while; not charged to tasks
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass(frozen=True)
class Outcome:
    status: str  # "ok", "timeout" or "crashed"
    correct: bool = False
    parse_failure: bool = False


WORKER_COMMAND = (sys.executable, "-m", "rlvf_math.worker")


class _Worker:
    def __init__(self, command: Sequence[str]):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, close_fds=True,
        )
        self.fd = self.process.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = b""
        self.ready = False

    def send(self, task: dict) -> None:
        self.process.stdin.write(json.dumps(task).encode() + b"\n")
        self.process.stdin.flush()

    def receive(self) -> list[dict] | None:
        """Messages that have arrived (maybe none); None once the worker has died."""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        except OSError:
            return None
        if not chunk:
            return None
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def kill(self) -> None:
        self.process.kill()
        self._reap()

    def stop(self) -> None:
        try:
            self.process.stdin.close()  # the worker exits at the end of its input
            self.process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
        self._reap()

    def _reap(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()


@dataclass
class _InFlight:
    worker: _Worker
    index: int
    deadline: float


class VerifierPool:
    """At most `size` workers, started on first use and shared by all threads.

    `command` starts one worker (a process speaking the line protocol of `rlvf_math.worker`).
    """

    def __init__(self, size: int = 2, command: Sequence[str] = WORKER_COMMAND):
        if size < 1:
            raise ValueError("the verifier pool needs at least one worker")
        self.size = size
        self.command = tuple(command)
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False
        atexit.register(self.close)

    def run(self, tasks: list[dict], timeout: float) -> list[Outcome]:
        """Verify every task; each gets `timeout` seconds of a worker's time once that worker is ready."""
        outcomes: list[Outcome | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        in_flight: list[_InFlight] = []
        while pending or in_flight:
            while pending:
                worker = self._acquire(block=not in_flight)
                if worker is None:
                    break
                index = pending.popleft()
                try:
                    worker.send(tasks[index])
                except OSError:
                    self._release(worker, healthy=False)
                    pending.appendleft(index)
                    continue
                limit = timeout if worker.ready else STARTUP_TIMEOUT
                in_flight.append(_InFlight(worker, index, time.monotonic() + limit))
            self._wait(in_flight, outcomes, timeout, poll=0.05 if pending else None)
        return outcomes  # type: ignore[return-value]

    def _wait(self, in_flight: list[_InFlight], outcomes: list, timeout: float, poll: float | None) -> None:
        """Wait for results until the nearest deadline (or `poll`), then settle what finished or overran."""
        if not in_flight:
            return
        now = time.monotonic()
        wait_for = max(0.0, min(item.deadline for item in in_flight) - now)
        if poll is not None:
            wait_for = min(wait_for, poll)  # other threads may free a worker for our pending tasks
        readable, _, _ = select.select([item.worker.fd for item in in_flight], [], [], wait_for)
        now = time.monotonic()
        for item in list(in_flight):
            if item.worker.fd in readable:
                messages = item.worker.receive()
                if messages is None:
                    outcomes[item.index] = Outcome("crashed")
                    in_flight.remove(item)
                    self._release(item.worker, healthy=False)
                    continue
                for message in messages:
                    if message.get("ready"):
                        item.worker.ready = True
                        item.deadline = now + timeout
                    else:
                        outcomes[item.index] = Outcome("ok", message["correct"], message["parse_failure"])
                if outcomes[item.index] is not None:
                    in_flight.remove(item)
                    self._release(item.worker, healthy=True)
                    continue
            if now >= item.deadline:
                outcomes[item.index] = Outcome("timeout" if item.worker.ready else "crashed")
                in_flight.remove(item)
                self._release(item.worker, healthy=False)

    def _acquire(self, block: bool) -> _Worker | None:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the verifier pool is closed")
                if self._idle:
                    return self._idle.pop()
                if self._count < self.size:
                    self._count += 1
                    break
                if not block:
                    return None
                self._cond.wait()
        try:
            return _Worker(self.command)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker, healthy: bool) -> None:
        with self._cond:
            keep = healthy and not self._closed
            if keep:
                self._idle.append(worker)
            else:
                self._count -= 1
            self._cond.notify()
        if not keep:
            worker.kill()

    def close(self) -> None:
        """Stop the idle workers; busy ones are stopped as their callers release them."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for worker in idle:
            worker.stop()
        atexit.unregister(self.close)
