"""The worker that runs inside the sandbox: it forks one fresh child per program.

This file is executed by the sandbox's own python (`python -S -E -s -c <this source>`), so it must use the
standard library only and must not import anything from `rlvf_sandbox`.

Inside bubblewrap it is PID 1 of its own PID namespace. That gives three guarantees the pool relies on:
- the kernel drops every signal that other processes of the namespace send to PID 1 without a handler
  installed, so a program cannot kill its worker;
- every orphan is re-parented to it, so after each run `kill(-1, SIGKILL)` plus reaping leaves nothing;
- when it exits, the kernel kills the whole namespace.
It also marks itself non-dumpable so programs (same uid) can neither ptrace it nor open its pipes through
/proc/1/fd.

Protocol with the host, over the inherited stdin/stdout pipes: frames of a 4-byte big-endian length and
a UTF-8 JSON object. The first frame sent is a readiness report. A request's JSON holds only sizes and
settings; its payload follows raw: the code, each file, the stdin, then `late_stdin` bytes more of stdin
that are read only after the program was forked. A reply is followed by the program's stdout and stderr.

Every program is forked from this process, so whatever its memory holds, the program can read in its copy.
Payload and output bytes therefore pass only through the `Buffers` below, never into a Python object here,
and are wiped after each run: a program never finds an earlier run's code, input or output (a peer's
correct solution, its printed answer), nor the late stdin of its own run (the tests of a function test).
"""

import contextlib
import ctypes
import errno
import gc
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import time
import traceback

PR_SET_DUMPABLE = 4
# argv[1]: the private writable directory; "/tmp" in the sandbox, a temporary directory when unisolated.
WORK_DIR = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
PROGRAM_NAME = "main.py"
MEMORY_POLL_SECONDS = 0.02
# Trusted programs run many times (the function-test harness) are compiled once per worker.
MAX_COMPILED_PROGRAMS = 8
READ_CHUNK = 1 << 16
# Imported once per worker, so that the programs forked from it (and the tests and solutions they run) do
# not each pay for them: `typing` alone costs ~5 ms, more than running a HumanEval test.
PRELOADED_MODULES = ("typing", "math", "collections", "itertools", "functools", "re", "string", "random",
                     "copy", "heapq", "bisect", "fractions", "decimal", "statistics", "hashlib", "dataclasses",
                     "fcntl", "ast")


def main():
    namespaced = os.getpid() == 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    # Python installs a SIGINT handler; as PID 1 any handler would let programs signal us.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    channel_in, channel_out = os.dup(0), os.dup(1)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    for name in PRELOADED_MODULES:
        with contextlib.suppress(ImportError):
            __import__(name)
    # Forked programs inherit these objects copy-on-write; a frozen generation is never scanned by their
    # garbage collector, so they do not copy every page of it.
    gc.freeze()
    runner = Runner(namespaced, libc, channel_in)
    send(channel_out, {"ready": True, "pid": os.getpid(), "uid": os.getuid(),
                       "python": sys.version.split()[0], "namespaced": namespaced})
    while True:
        request = receive(channel_in)
        if request is None:
            return
        try:
            reply = runner.run(request)
        except Exception:  # a worker bug must reach the host as an error, not a hang
            reply = {"error": traceback.format_exc()}
        try:
            runner.discard_payload()  # keeps the channel in step if the run failed before reading it all
            runner.clean_scratch()
        except OSError:
            # A program left state we cannot remove: retire this worker, the host starts a fresh one.
            reply["retire"] = True
        stdout, stderr = runner.stdout.sent(), runner.stderr.sent()
        send(channel_out, dict(reply, stdout_bytes=len(stdout), stderr_bytes=len(stderr)))
        for view in (stdout, stderr):
            write_all(channel_out, view)
        del stdout, stderr
        for buffer in (runner.payload, runner.stdout, runner.stderr):
            buffer.wipe()
        if reply.get("retire"):
            return


def send(fd, obj):
    data = json.dumps(obj).encode()
    write_all(fd, memoryview(struct.pack(">I", len(data)) + data))


def write_all(fd, view):
    while view:
        view = view[os.write(fd, view):]


def read_into(fd, view):
    """Fill `view` from `fd` (no intermediate copy)."""
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if not n:
            raise EOFError("the host closed the channel")
        got += n


class Buffers:
    """A reusable byte buffer whose used part is wiped after every run. It never shrinks, and grows by
    replacing (after wiping) rather than resizing, since a resize may leave a copy behind in freed memory."""

    def __init__(self):
        self.buffer = bytearray()
        self.used = self.limit = 0

    def reserve(self, size, limit=None):
        if size > len(self.buffer):
            self.wipe()
            self.buffer = bytearray(max(size, 2 * len(self.buffer)))
        self.used = size
        self.limit = size if limit is None else limit
        return memoryview(self.buffer)[:size]

    def sent(self):
        """What goes back to the host: the used part, less a capture's byte past its cap."""
        return memoryview(self.buffer)[:min(self.used, self.limit)]

    def wipe(self):
        self.buffer[:self.used] = bytes(self.used)
        self.used = self.limit = 0


def receive(fd):
    header = read_exact(fd, 4)
    if header is None:
        return None
    body = read_exact(fd, struct.unpack(">I", header)[0])
    return None if body is None else json.loads(body)


def read_exact(fd, n):
    chunks, remaining = [], n
    while remaining:
        chunk = os.read(fd, remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class Runner:
    def __init__(self, namespaced, libc, channel_in):
        self.namespaced = namespaced
        self.libc = libc
        self.channel_in = channel_in
        self.payload, self.stdout, self.stderr = Buffers(), Buffers(), Buffers()
        self.payload_pending = None  # the part of the payload view still to read from the host
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self.compiled = {}  # source -> code object, only for requests marked trusted by the host

    def compiled_code(self, req, code_view):
        if req.get("code_bytes") is None or not req.get("cache_compiled"):
            return None
        source = str(code_view, "utf-8", "surrogatepass")  # trusted, public source: it may stay in memory
        code = self.compiled.get(source)
        if code is None:
            code = compile(source, os.path.join(WORK_DIR, PROGRAM_NAME), "exec")
            if len(self.compiled) >= MAX_COMPILED_PROGRAMS:
                self.compiled.pop(next(iter(self.compiled)))
            self.compiled[source] = code
        return code

    def run(self, req):
        started = time.monotonic()
        code_size = req.get("code_bytes") or 0
        files = req.get("files", [])
        early = code_size + sum(size for _, size in files) + req.get("stdin_bytes", 0)
        payload = self.payload.reserve(early + req.get("late_stdin", 0))
        self.payload_pending = payload
        read_into(self.channel_in, payload[:early])
        self.payload_pending = payload[early:]
        code_view = payload[:code_size]
        offset = code_size
        for name, size in files:
            self.write_file(name, payload[offset:offset + size])
            offset += size
        stdin_view = payload[offset:]
        compiled = self.compiled_code(req, code_view)
        pipes = [os.pipe() for _ in range(3)]  # stdin, stdout, stderr
        pid = os.fork()
        if pid == 0:
            try:
                self.child(req, [pipes[0][0], pipes[1][1], pipes[2][1]], code_view, compiled)
            except BaseException:
                os.write(2, ("sandbox: could not start the program\n" + traceback.format_exc()).encode())
            finally:
                os._exit(127)
        for fd in (pipes[0][0], pipes[1][1], pipes[2][1]):
            os.close(fd)
        try:
            read_into(self.channel_in, self.payload_pending)  # the late stdin, now that the fork is done
            self.payload_pending = None
            outcome = self.supervise(req, pid, pipes[0][1], pipes[1][0], pipes[2][0], stdin_view, started)
        finally:
            self.kill_all(pid)
            for fd in (pipes[0][1], pipes[1][0], pipes[2][0]):
                with contextlib.suppress(OSError):
                    os.close(fd)
        outcome["wall_seconds"] = time.monotonic() - started
        return outcome

    def discard_payload(self):
        if self.payload_pending is not None:
            read_into(self.channel_in, self.payload_pending)
            self.payload_pending = None

    def write_file(self, name, content):
        path = os.path.normpath(os.path.join(WORK_DIR, name))
        if not path.startswith(WORK_DIR + "/"):
            raise ValueError(f"file name escapes the work directory: {name!r}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, content)
        finally:
            os.close(fd)

    # ---- the child: limits, then exec or run the Python source in this forked interpreter ----

    def child(self, req, stdio, code_view, compiled=None):
        os.setsid()
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        os.chdir(WORK_DIR)
        if req.get("code_bytes") is not None:
            # A real file behind __file__: tracebacks show source lines, inspect and spawn can read it.
            self.write_file(PROGRAM_NAME, code_view)
        limits = req["limits"]
        for name, value in (("RLIMIT_CORE", 0), ("RLIMIT_CPU", limits["cpu_seconds"]),
                            ("RLIMIT_AS", limits["memory"]), ("RLIMIT_FSIZE", limits["file_size"]),
                            ("RLIMIT_NPROC", limits["processes"]), ("RLIMIT_NOFILE", limits["open_files"])):
            if value is not None:
                # CPU: the hard limit one second later turns the soft limit's SIGXCPU into SIGKILL.
                hard = value + 1 if name == "RLIMIT_CPU" else value
                resource.setrlimit(getattr(resource, name), (value, hard))
        env = dict(req["env"], HOME=WORK_DIR, TMPDIR=WORK_DIR)
        if req.get("argv"):
            os.execve(resolve(req["argv"][0], env.get("PATH", "")), req["argv"], env)
        os.environ.clear()
        os.environ.update(env)
        run_source(str(code_view, "utf-8", "surrogatepass"), [PROGRAM_NAME, *list(req.get("args", []))],
                   compiled)

    # ---- the supervisor side ----

    def supervise(self, req, pid, stdin_w, stdout_r, stderr_r, stdin_data, started):
        limits = req["limits"]
        deadline = started + req["timeout"]
        captured = {stdout_r: Capture(self.stdout, limits["output"]), stderr_r: Capture(self.stderr, limits["output"])}
        truncated = {stdout_r: False, stderr_r: False}
        for fd in (stdin_w, stdout_r, stderr_r):
            os.set_blocking(fd, False)
        pending_stdin = memoryview(stdin_data)
        if not pending_stdin:
            os.close(stdin_w)
            stdin_w = None
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        for fd in (stdout_r, stderr_r):
            poller.register(fd, select.POLLIN)
        if stdin_w is not None:
            poller.register(stdin_w, select.POLLOUT)
        killed_by, peak, next_memory_check = None, 0, started
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    killed_by = "timeout"
                    break
                if self.namespaced and now >= next_memory_check:
                    usage = self.namespace_memory()
                    peak = max(peak, usage)
                    if usage > limits["memory"]:
                        killed_by = "memory_limit"
                        break
                    next_memory_check = now + MEMORY_POLL_SECONDS
                wait = min(deadline, next_memory_check) - now if self.namespaced else deadline - now
                events = poller.poll(max(wait, 0.0) * 1000)
                exited = False
                for fd, _event in events:
                    if fd == pidfd:
                        exited = True
                    elif fd == stdin_w:
                        try:
                            pending_stdin = pending_stdin[os.write(stdin_w, pending_stdin[:READ_CHUNK]):]
                        except BrokenPipeError:
                            pending_stdin = pending_stdin[:0]
                        if not pending_stdin:
                            poller.unregister(stdin_w)
                            os.close(stdin_w)
                            stdin_w = None
                    elif not self.collect(fd, captured, truncated):
                        poller.unregister(fd)
                if any(truncated.values()):
                    killed_by = "output_limit"
                    break
                if exited:
                    break
        finally:
            os.close(pidfd)
            if stdin_w is not None:
                os.close(stdin_w)
        if killed_by is not None:
            self.kill_namespace(pid)
        _, status, usage = os.wait4(pid, 0)
        # Leftover processes (daemons) die now; what they already wrote is still read below.
        self.kill_namespace(pid)
        for fd in (stdout_r, stderr_r):
            while self.collect(fd, captured, truncated):
                pass
        if killed_by is None and any(truncated.values()):
            killed_by = "output_limit"
        cpu = usage.ru_utime + usage.ru_stime
        exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if killed_by is None:
            killed_by = classify(sig, cpu, limits, exit_code, captured[stderr_r])
        return {
            "exit_code": exit_code,
            "signal": sig,
            "timed_out": killed_by == "timeout",
            "killed_by": killed_by,
            "cpu_seconds": cpu,
            "peak_memory": max(peak, usage.ru_maxrss * 1024),
            "stdout_truncated": truncated[stdout_r],
            "stderr_truncated": truncated[stderr_r],
        }

    def collect(self, fd, captured, truncated):
        """Read what is available; False at end of file or when nothing is left to read."""
        capture = captured[fd]
        try:
            got = capture.read_from(fd)
        except BlockingIOError:
            return False
        except OSError as exc:  # already closed
            if exc.errno == errno.EBADF:
                return False
            raise
        if capture.overflowed:
            truncated[fd] = True
            return False
        return got > 0

    def namespace_memory(self):
        """Anonymous resident memory of every process in the namespace except this worker."""
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or entry == "1":
                continue
            try:
                with open(f"/proc/{entry}/statm", "rb") as f:
                    fields = f.read().split()
                total += (int(fields[1]) - int(fields[2])) * self.page_size
            except (OSError, IndexError, ValueError):
                pass  # exited meanwhile
        return total

    def kill_namespace(self, pid):
        if self.namespaced:
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def kill_all(self, pid):
        """Kill and reap until no process is left (every orphan of the namespace is our child)."""
        if not self.namespaced:
            self.kill_namespace(pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            return
        while True:
            self.kill_namespace(pid)
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return

    def clean_scratch(self):
        tops = [WORK_DIR, "/dev/shm"] if self.namespaced else [WORK_DIR]
        for top in tops:
            if not os.path.isdir(top):
                continue
            if not os.access(top, os.R_OK | os.W_OK | os.X_OK):
                os.chmod(top, 0o700)  # a program took the permissions away
            for entry in os.listdir(top):
                path = os.path.join(top, entry)
                if os.path.isdir(path) and not os.path.islink(path):
                    make_writable(path)
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        if self.namespaced:
            remove_sysv_ipc(self.libc)


class Capture:
    """A program's stream read straight into a worker buffer, up to `cap` bytes (one more byte tells that it
    wrote past the cap; it is kept out of what is sent, and wiped with the rest)."""

    def __init__(self, buffers, cap):
        self.buffers, self.cap = buffers, cap
        self.view = buffers.reserve(cap + 1, limit=cap)
        buffers.used = 0  # grows as data arrives, so that only what was written gets wiped

    def read_from(self, fd):
        got = os.readv(fd, [self.view[self.buffers.used:self.buffers.used + READ_CHUNK]])
        self.buffers.used += got
        return got

    @property
    def overflowed(self):
        return self.buffers.used > self.cap

    def tail_contains(self, needle, size):
        return self.buffers.buffer.find(needle, max(0, self.buffers.used - size), self.buffers.used) >= 0


def classify(sig, cpu, limits, exit_code, stderr):
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= limits["cpu_seconds"]):
        return "cpu_limit"
    if sig == signal.SIGXFSZ:
        return "file_size_limit"
    if sig is not None:
        return "signal:" + signal.Signals(sig).name
    if exit_code and stderr.tail_contains(b"MemoryError", 2000):
        return "memory_limit"
    return None


def wipe(buffer):
    buffer[:] = bytes(len(buffer))


def make_writable(top):
    """A program may leave directories without permissions; rmtree needs them back (walk is top-down)."""
    os.chmod(top, 0o700)
    for root, dirs, _ in os.walk(top):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o700)


def remove_sysv_ipc(libc):
    """System V IPC objects outlive processes: remove those a program left in this IPC namespace."""
    ipc_rmid = 0
    for kind, remove in (("shm", libc.shmctl), ("sem", libc.semctl), ("msg", libc.msgctl)):
        try:
            with open("/proc/sysvipc/" + kind) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            ident = int(row.split()[1])
            if kind == "sem":
                remove(ident, 0, ipc_rmid, 0)
            else:
                remove(ident, ipc_rmid, None)


def resolve(program, path):
    if "/" in program:
        return program
    for directory in path.split(":"):
        candidate = os.path.join(directory, program)
        if os.access(candidate, os.X_OK):
            return candidate
    return program


def run_source(source, argv, compiled=None):
    """Run Python source (or its `compiled` code object) as `__main__` in this freshly forked interpreter, like
    `python main.py`."""
    # The program's standard streams for the rest of this process's life.
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace",  # noqa: SIM115
                                       buffering=1, closefd=False)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = argv
    sys.path[0] = WORK_DIR
    main_module = type(sys)("__main__")
    main_module.__file__ = os.path.join(WORK_DIR, argv[0])
    main_module.__builtins__ = __builtins__
    sys.modules["__main__"] = main_module
    code = 0
    try:
        exec(compiled or compile(source, main_module.__file__, "exec"), main_module.__dict__)
    except SystemExit as exc:
        code = exit_code_of(exc)
    except BaseException:
        kind, exc, tb = sys.exc_info()
        traceback.print_exception(kind, exc, tb.tb_next)  # from the program's frame on, not ours
        code = 1
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except SystemExit as exc:
        code = exit_code_of(exc)
    except BaseException:
        code = code or 1
    os._exit(code)


def exit_code_of(exc):
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


main()
