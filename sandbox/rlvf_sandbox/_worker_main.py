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
a UTF-8 JSON object; byte strings are base64. The first frame sent is a readiness report. A request with
`late_stdin: N` is followed by N raw bytes, read only after the program was forked and wiped after the
run: they are never in the memory image a program (or any process it forks) starts from.
"""

import base64
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
        runner.discard_late_stdin()  # keeps the channel in step if the run failed before reading it
        try:
            runner.clean_scratch()
        except OSError:
            # A program left state we cannot remove: retire this worker, the host starts a fresh one.
            reply["retire"] = True
        send(channel_out, reply)
        if reply.get("retire"):
            return


def send(fd, obj):
    data = json.dumps(obj).encode()
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


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
        self.late_stdin_pending = 0
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self.compiled = {}  # source -> code object, only for requests marked trusted by the host

    def compiled_code(self, req):
        source = req.get("code")
        if source is None or not req.get("cache_compiled"):
            return None
        code = self.compiled.get(source)
        if code is None:
            code = compile(source, os.path.join(WORK_DIR, PROGRAM_NAME), "exec")
            if len(self.compiled) >= MAX_COMPILED_PROGRAMS:
                self.compiled.pop(next(iter(self.compiled)))
            self.compiled[source] = code
        return code

    def run(self, req):
        started = time.monotonic()
        self.write_files(req.get("files", {}))
        self.late_stdin_pending = late = int(req.get("late_stdin", 0))
        early = base64.b64decode(req.get("stdin", ""))
        # One buffer, sized once: the late part is read straight into it, so no other copy exists to wipe.
        stdin_data = bytearray(len(early) + late)
        stdin_data[:len(early)] = early
        compiled = self.compiled_code(req)
        pipes = [os.pipe() for _ in range(3)]  # stdin, stdout, stderr
        pid = os.fork()
        if pid == 0:
            try:
                self.child(req, [pipes[0][0], pipes[1][1], pipes[2][1]], compiled)
            except BaseException:
                os.write(2, ("sandbox: could not start the program\n" + traceback.format_exc()).encode())
            finally:
                os._exit(127)
        for fd in (pipes[0][0], pipes[1][1], pipes[2][1]):
            os.close(fd)
        try:
            self.read_late_stdin(memoryview(stdin_data)[len(early):])
            outcome = self.supervise(req, pid, pipes[0][1], pipes[1][0], pipes[2][0], stdin_data, started)
        finally:
            wipe(stdin_data)
            self.kill_all(pid)
            for fd in (pipes[0][1], pipes[1][0], pipes[2][0]):
                with contextlib.suppress(OSError):
                    os.close(fd)
        outcome["wall_seconds"] = time.monotonic() - started
        return outcome

    def read_late_stdin(self, view):
        while self.late_stdin_pending:
            got = os.readv(self.channel_in, [view[len(view) - self.late_stdin_pending:]])
            if not got:
                raise EOFError("the host closed the channel")
            self.late_stdin_pending -= got

    def discard_late_stdin(self):
        if self.late_stdin_pending:
            scratch = bytearray(self.late_stdin_pending)
            self.read_late_stdin(memoryview(scratch))
            wipe(scratch)

    def write_files(self, files):
        for name, content in files.items():
            path = os.path.normpath(os.path.join(WORK_DIR, name))
            if not path.startswith(WORK_DIR + "/"):
                raise ValueError(f"file name escapes the work directory: {name!r}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(base64.b64decode(content))

    # ---- the child: limits, then exec or run the Python source in this forked interpreter ----

    def child(self, req, stdio, compiled=None):
        os.setsid()
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        os.chdir(WORK_DIR)
        if req.get("code") is not None:
            # A real file behind __file__: tracebacks show source lines, inspect and spawn can read it.
            with open(PROGRAM_NAME, "w", encoding="utf-8", errors="surrogatepass") as f:
                f.write(req["code"])
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
        run_source(req["code"], [PROGRAM_NAME, *list(req.get("args", []))], compiled)

    # ---- the supervisor side ----

    def supervise(self, req, pid, stdin_w, stdout_r, stderr_r, stdin_data, started):
        limits = req["limits"]
        deadline = started + req["timeout"]
        caps = {stdout_r: limits["output"], stderr_r: limits["output"]}
        captured = {stdout_r: bytearray(), stderr_r: bytearray()}
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
                    elif not self.collect(fd, captured, caps, truncated):
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
            while self.collect(fd, captured, caps, truncated):
                pass
        if killed_by is None and any(truncated.values()):
            killed_by = "output_limit"
        cpu = usage.ru_utime + usage.ru_stime
        exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        stderr = bytes(captured[stderr_r])
        if killed_by is None:
            killed_by = classify(sig, cpu, limits, exit_code, stderr)
        return {
            "exit_code": exit_code,
            "signal": sig,
            "timed_out": killed_by == "timeout",
            "killed_by": killed_by,
            "cpu_seconds": cpu,
            "peak_memory": max(peak, usage.ru_maxrss * 1024),
            "stdout": base64.b64encode(bytes(captured[stdout_r])).decode(),
            "stderr": base64.b64encode(stderr).decode(),
            "stdout_truncated": truncated[stdout_r],
            "stderr_truncated": truncated[stderr_r],
        }

    def collect(self, fd, captured, caps, truncated):
        """Read what is available; False at end of file or when nothing is left to read."""
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return False
        except OSError as exc:  # already closed
            if exc.errno == errno.EBADF:
                return False
            raise
        if not data:
            return False
        room = caps[fd] - len(captured[fd])
        captured[fd] += data[:max(room, 0)]
        if len(data) > room:
            truncated[fd] = True
            return False
        return True

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


def classify(sig, cpu, limits, exit_code, stderr):
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= limits["cpu_seconds"]):
        return "cpu_limit"
    if sig == signal.SIGXFSZ:
        return "file_size_limit"
    if sig is not None:
        return "signal:" + signal.Signals(sig).name
    if exit_code and b"MemoryError" in stderr[-2000:]:
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
