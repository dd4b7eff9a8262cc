"""`Sandbox`: run untrusted programs contained, through a pool of pre-started isolated workers.

Each worker is one bubblewrap sandbox (own user, PID, network, IPC, UTS and mount namespaces, read-only
system, private tmpfs, uid 65534, optional seccomp filter) whose PID 1 forks a fresh child per program,
applies the rlimits, runs it, then kills every process left in the namespace and wipes the scratch
space. Starting a sandbox costs tens of milliseconds; forking inside one costs about one.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import tempfile
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Literal

from rlvf_sandbox._worker import Worker, WorkerLost
from rlvf_sandbox.isolation import (
    SANDBOX_PATH,
    SANDBOX_UID,
    bwrap_command,
    default_python,
    find_bwrap,
    seccomp_available,
    seccomp_program,
    unisolated_command,
)

log = logging.getLogger("rlvf_sandbox")

Isolation = Literal["bwrap", "none"]
# Time the host grants a worker beyond the run's timeout (killing and cleaning up) before giving up on it.
HOST_GRACE_SECONDS = 5.0
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program it ran)."""


class SandboxUnavailable(SandboxError):
    """Isolation was requested but cannot be provided on this machine."""


class UnisolatedWarning(RuntimeWarning):
    """Programs run without isolation."""


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as "512M", "1G", "64k"."""
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(value)
    if match is None:
        raise ValueError(f"cannot read size {value!r}; use bytes or a suffix K, M or G (e.g. 512M)")
    return int(float(match[1]) * _UNITS[match[2].upper()])


@dataclass(frozen=True)
class RunResult:
    """What one program did. `killed_by` names the limit or signal that ended it, if any:
    "timeout", "cpu_limit", "memory_limit", "output_limit", "file_size_limit", "signal:SIGSEGV", ...,
    or "worker_lost" when the sandbox worker itself failed."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    killed_by: str | None
    wall_seconds: float
    cpu_seconds: float
    peak_memory: int
    signal: int | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_by is None

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode(errors="replace")

    @classmethod
    def from_reply(cls, reply: Mapping[str, Any], stdout: bytes, stderr: bytes) -> RunResult:
        return cls(
            exit_code=reply["exit_code"],
            stdout=stdout,
            stderr=stderr,
            timed_out=reply["timed_out"],
            killed_by=reply["killed_by"],
            wall_seconds=reply["wall_seconds"],
            cpu_seconds=reply["cpu_seconds"],
            peak_memory=reply["peak_memory"],
            signal=reply["signal"],
            stdout_truncated=reply["stdout_truncated"],
            stderr_truncated=reply["stderr_truncated"],
        )

    @classmethod
    def worker_lost(cls, message: str, timed_out: bool, wall_seconds: float) -> RunResult:
        return cls(exit_code=None, stdout=b"", stderr=message.encode(), timed_out=timed_out,
                   killed_by="timeout" if timed_out else "worker_lost", wall_seconds=wall_seconds,
                   cpu_seconds=0.0, peak_memory=0)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stdout"], out["stderr"] = self.stdout_text, self.stderr_text
        return out


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


class Sandbox:
    """Runs programs contained and in parallel. Thread-safe; use as a context manager or call `close()`.

    `isolation="bwrap"` (default) needs bubblewrap and refuses to run without it; `isolation="none"`
    runs programs as plain child processes with the same limits, which does NOT contain them.
    `seccomp=None` uses the seccomp filter when `pyseccomp` is installed, True requires it.
    Python source runs by default in a child forked from the worker's interpreter (about 1 ms instead of
    the ~30 ms start of a new interpreter); `fresh_interpreter=True` execs a new python per program.
    """

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        memory: int | str = "512M",
        workers: int | None = None,
        isolation: Isolation = "bwrap",
        seccomp: bool | None = None,
        processes: int = 64,
        open_files: int = 256,
        file_size: int | str = "16M",
        tmp_size: int | str = "64M",
        output_limit: int | str = "1M",
        cpu_seconds: float | None = None,
        python: str | None = None,
        fresh_interpreter: bool = False,
    ):
        if isolation not in ("bwrap", "none"):
            raise ValueError(f"isolation must be 'bwrap' or 'none', not {isolation!r}")
        self.timeout = float(timeout)
        self.memory = parse_size(memory)
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.isolation = isolation
        self.processes = processes
        self.open_files = open_files
        self.file_size = parse_size(file_size)
        self.tmp_size = parse_size(tmp_size)
        self.output_limit = parse_size(output_limit)
        self.cpu_seconds = cpu_seconds
        self.python = python or default_python()
        self.fresh_interpreter = fresh_interpreter
        self._uid = SANDBOX_UID if os.geteuid() == 0 else None
        self._seccomp_program: bytes | None = None
        if isolation == "bwrap":
            self._bwrap = find_bwrap()
            if self._bwrap is None:
                raise SandboxUnavailable(
                    "bubblewrap (bwrap) is not installed, so programs cannot be isolated. Install it "
                    "(Debian/Ubuntu: apt-get install bubblewrap) or, for trusted code only, pass "
                    "isolation='none'."
                )
            if seccomp is not False:
                if seccomp_available():
                    self._seccomp_program = seccomp_program()
                elif seccomp:
                    raise SandboxUnavailable("seccomp=True needs the pyseccomp package (pip install pyseccomp) "
                                             "and libseccomp")
        else:
            message = ("rlvf-sandbox: isolation='none' was requested: untrusted programs will run WITHOUT "
                       "namespaces, filesystem or network isolation, only with rlimits. Install bubblewrap "
                       "(apt-get install bubblewrap) to contain them.")
            warnings.warn(message, UnisolatedWarning, stacklevel=2)
            log.warning(message)
        self._idle: queue.LifoQueue[Worker] = queue.LifoQueue()
        self._started = 0
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        # bubblewrap's --die-with-parent follows the *thread* that started it: workers are started by
        # this one long-lived thread so that they live exactly as long as the Sandbox.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="rlvf-sandbox-spawner")
        self._closed = False

    @property
    def seccomp(self) -> bool:
        return self._seccomp_program is not None

    # ---- running ----

    def run(
        self,
        code: str | None = None,
        *,
        argv: Sequence[str] | None = None,
        args: Sequence[str] = (),
        stdin: bytes | str = b"",
        files: Mapping[str, bytes | str] | None = None,
        timeout: float | None = None,
        memory: int | str | None = None,
        late_stdin: bytes | str = b"",
        cache_compiled: bool = False,
    ) -> RunResult:
        """Run Python source `code` (with `args` as sys.argv[1:]) or the command `argv`, both in a fresh
        private /tmp holding `files` (relative paths). `stdin`, `timeout` and `memory` apply to this run.
        `late_stdin` follows `stdin` on the program's standard input, but reaches the sandbox only after
        the program started: no process forked from the sandbox's own (a Python program, or what it forks
        before reading it) ever holds it in memory; the worker wipes its copy after the run.
        `cache_compiled`: each worker compiles `code` once and keeps it; only for trusted source run many
        times (a test harness), since the worker itself compiles it."""
        if (code is None) == (argv is None):
            raise ValueError("pass exactly one of `code` (Python source) or `argv` (a command)")
        timeout = self.timeout if timeout is None else float(timeout)
        request, payload = self._request(code, argv, args, stdin, files or {}, timeout,
                                         self.memory if memory is None else parse_size(memory), _as_bytes(late_stdin))
        request["cache_compiled"] = cache_compiled and request["code_bytes"] is not None
        worker = self._acquire()
        try:
            reply, stdout, stderr = worker.call(request, payload, timeout + HOST_GRACE_SECONDS)
        except WorkerLost as exc:
            self._discard(worker)
            return RunResult.worker_lost(str(exc), timed_out=exc.timed_out,
                                         wall_seconds=timeout + HOST_GRACE_SECONDS)
        except BaseException:
            self._discard(worker)
            raise
        if reply.get("retire"):
            self._discard(worker)
        else:
            self._idle.put(worker)
        if "error" in reply:
            raise SandboxError(f"the sandbox worker failed:\n{reply['error']}")
        return RunResult.from_reply(reply, stdout, stderr)

    def run_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[RunResult]:
        """Run several jobs (each a dict of `run` keyword arguments) in parallel on the pool, in order."""
        jobs = list(jobs)
        if len(jobs) <= 1:
            return [self.run(**job) for job in jobs]
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="rlvf-sandbox")
        return list(self._executor.map(lambda job: self.run(**job), jobs))

    def _request(self, code, argv, args, stdin, files, timeout, memory, late_stdin) -> tuple[dict[str, Any], bytes]:
        """The request's settings and sizes, and its payload (code, files, stdin, late stdin), sent raw."""
        files = {name: _as_bytes(content) for name, content in files.items()}
        for name in files:
            if os.path.isabs(name) or ".." in name.split("/"):
                raise ValueError(f"file names must be relative paths inside the sandbox's tmp, got {name!r}")
        source = None if code is None else code.encode("utf-8", "surrogatepass")
        if source is not None and self.fresh_interpreter:
            files["main.py"] = source
            argv, source = [self.python, "-E", "-s", "main.py", *args], None
        stdin = _as_bytes(stdin)
        payload = b"".join([source or b"", *files.values(), stdin, late_stdin])
        return {
            "code_bytes": None if source is None else len(source),
            "argv": list(argv) if argv is not None else None,
            "args": list(args),
            "files": [[name, len(content)] for name, content in files.items()],
            "stdin_bytes": len(stdin),
            "late_stdin": len(late_stdin),
            "timeout": timeout,
            # The worker adds HOME and TMPDIR (its private directory); nothing of this process leaks in.
            "env": {"PATH": SANDBOX_PATH, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
            "limits": {
                "cpu_seconds": math.ceil(self.cpu_seconds or timeout) + 1,
                "memory": memory,
                "file_size": self.file_size,
                "processes": self.processes,
                "open_files": self.open_files,
                "output": self.output_limit,
            },
        }, payload

    # ---- the pool ----

    def start(self) -> Sandbox:
        """Start every worker now rather than on first use."""
        needed = []
        with self._lock:
            while self._started < self.workers:
                self._started += 1
                needed.append(None)
        for worker in [self._spawn_counted() for _ in needed]:
            self._idle.put(worker)
        return self

    def _acquire(self) -> Worker:
        if self._closed:
            raise SandboxError("this Sandbox is closed")
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            spawn = self._started < self.workers
            if spawn:
                self._started += 1
        return self._spawn_counted() if spawn else self._idle.get()

    def _spawn_counted(self) -> Worker:
        try:
            return self._spawner.submit(self._spawn).result()
        except BaseException:
            with self._lock:
                self._started -= 1
            raise

    def _discard(self, worker: Worker) -> None:
        worker.kill()
        with self._lock:
            self._started -= 1

    def _spawn(self) -> Worker:
        scratch = None
        if self.isolation == "bwrap":
            command = bwrap_command(self._bwrap, self.python, tmp_size=self.tmp_size, seccomp=self.seccomp)
        else:
            scratch = tempfile.mkdtemp(prefix="rlvf-sandbox-")
            if self._uid is not None:
                os.chown(scratch, self._uid, self._uid)
            command = unisolated_command(self.python, scratch)
        try:
            return Worker(command, uid=self._uid, seccomp=self._seccomp_program, scratch_dir=scratch)
        except WorkerLost as exc:
            if self.isolation == "bwrap":
                raise SandboxUnavailable(
                    f"{exc}\nbubblewrap could not create the sandbox (are unprivileged user namespaces "
                    "enabled? sysctl user.max_user_namespaces, kernel.apparmor_restrict_unprivileged_userns)"
                ) from None
            raise SandboxError(str(exc)) from None

    def close(self) -> None:
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._spawner.shutdown(wait=True)
        while True:
            try:
                self._idle.get_nowait().kill()
            except queue.Empty:
                break

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

