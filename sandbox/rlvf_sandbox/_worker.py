"""Host side of one sandbox worker: start it, send it a run, read the reply, kill it."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from rlvf_sandbox.isolation import SECCOMP_FD_PLACEHOLDER

STARTUP_SECONDS = 30.0
MAX_REPLY_BYTES = 64 << 20


class WorkerLost(Exception):
    """The worker died or stopped answering; it has been killed."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


class Worker:
    def __init__(self, command: Sequence[str], *, uid: int | None, seccomp: bytes | None = None,
                 scratch_dir: str | None = None):
        self.scratch_dir = scratch_dir  # removed with the worker (unisolated mode's private directory)
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the worker
        seccomp_read = None
        pass_fds: tuple[int, ...] = ()
        if seccomp is not None:
            # bubblewrap reads the filter from an inherited fd; a pipe buffer holds it whole.
            seccomp_read, seccomp_write = os.pipe()
            os.write(seccomp_write, seccomp)
            os.close(seccomp_write)
            pass_fds = (seccomp_read,)
            command = [str(seccomp_read) if a == SECCOMP_FD_PLACEHOLDER else a for a in command]
        ids: dict[str, Any] = {}
        if uid is not None:
            # Dropping the uid before bubblewrap starts makes RLIMIT_NPROC count against an
            # unprivileged user (root ignores it) and leaves the outer bwrap process unprivileged.
            ids = {"user": uid, "group": uid, "extra_groups": []}
        try:
            self.process = subprocess.Popen(
                list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors,
                pass_fds=pass_fds, start_new_session=True, env={"PATH": "/usr/bin:/bin"}, **ids,
            )
        finally:
            if seccomp_read is not None:
                os.close(seccomp_read)
        self._buffer = bytearray()
        try:
            self.hello = self._receive(time.monotonic() + STARTUP_SECONDS)
        except WorkerLost as exc:
            raise WorkerLost(f"the sandbox worker did not start: {exc}") from None

    def call(self, request: dict[str, Any], payload: bytes, timeout: float) -> tuple[dict[str, Any], bytes, bytes]:
        """Send `request` and its raw `payload` right behind it; the reply, and the program's stdout and
        stderr that follow it raw."""
        data = json.dumps(request).encode()
        try:
            self.process.stdin.write(struct.pack(">I", len(data)) + data + payload)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            self.kill()
            raise WorkerLost("the sandbox worker exited") from None
        deadline = time.monotonic() + timeout
        header = self._receive_exact(4, deadline)
        size = struct.unpack(">I", header)[0]
        if size > MAX_REPLY_BYTES:
            self.kill()
            raise WorkerLost(f"the sandbox worker sent a {size}-byte reply")
        reply = json.loads(self._receive_exact(size, deadline))
        stdout = self._receive_exact(reply.get("stdout_bytes", 0), deadline)
        stderr = self._receive_exact(reply.get("stderr_bytes", 0), deadline)
        return reply, stdout, stderr

    def _receive(self, deadline: float) -> dict[str, Any]:
        size = struct.unpack(">I", self._receive_exact(4, deadline))[0]
        return json.loads(self._receive_exact(size, deadline))

    def _receive_exact(self, n: int, deadline: float) -> bytes:
        if n > MAX_REPLY_BYTES:
            self.kill()
            raise WorkerLost(f"the sandbox worker announced {n} bytes")
        fd = self.process.stdout.fileno()
        while len(self._buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                self.kill()
                raise WorkerLost("the sandbox worker did not answer in time", timed_out=True)
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                message = self.errors() or "no message"
                self.kill()
                raise WorkerLost(f"the sandbox worker exited: {message}")
            self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def errors(self) -> str:
        self._errors.seek(0)
        return self._errors.read()[-4000:].decode(errors="replace").strip()

    def kill(self) -> None:
        """Killing the worker (PID 1 of its namespace) makes the kernel kill everything inside."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        self._errors.close()
        if self.scratch_dir is not None:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)

    close = kill
