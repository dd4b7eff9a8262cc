"""The trusted side of a function test, run as a program inside the sandbox (standard library only).

This process never runs candidate code. Before it reads any test it forks a child that executes the
candidate's source and then serves calls over two pipes. The tests run here, in this process, where the
names they call (`candidate`, the entry point, the candidate's functions they mention) are stubs: each
call sends its arguments to the child as plain data and gets back plain data, the arguments as the
callee left them (in-place changes), or the builtin exception it raised. Whatever the candidate does in
its own process (patch builtins or modules, walk frames or the garbage collector, exit, close
descriptors, print, fork, signal, `atexit`) cannot touch this interpreter, its tests or its verdicts:

- the child closes every descriptor but its two pipes and the run's stderr (where its stdout goes too,
  size-capped like any output), and reads /dev/null as stdin: it can neither write the report nor read
  the tests, which arrive on stdin only after it was forked;
- this process is non-dumpable, so a same-uid child can neither ptrace it nor open /proc/PPID/fd or mem;
- the import path holds only the read-only standard library (the child shares the writable work dir);
- only exact builtin types cross the pipe (`decode` builds them; nothing else can be expressed), so no
  object with a rigged `__eq__` ever reaches a test.

A child that dies, hangs, or breaks the protocol fails the test it was serving; the next test gets a new
child, forked before that test is read. The harness reports through a descriptor saved before anything
else, tagged with a nonce it reads from stdin last.

stdin: frames (4-byte big-endian length, JSON): a header {"candidate", "setup", "entry_point", "budget",
"tests"}, one test source per frame, then the nonce. Output: one line `NONCE {"passed": [...],
"reasons": [...]}` on the saved stdout.
"""

import builtins
import ctypes
import fcntl
import json
import os
import signal
import struct
import sys

PR_SET_DUMPABLE = 4
MAX_FRAME_BYTES = 32 << 20
MAX_REASON_CHARS = 300
MAX_DEPTH = 100
BUILTIN_NAMES = frozenset(dir(builtins))


class PlainDataError(ValueError):
    """A value that is not plain data (exact builtin types only)."""


# ---- plain data on the wire: JSON, with containers tagged so that every exact type survives ----
# str, None, bool, small int and float travel as themselves; everything else as [tag, ...].

_SMALL_INT = 1 << 52


def encode(value, depth=0):
    if depth > MAX_DEPTH:
        raise PlainDataError(f"nested more than {MAX_DEPTH} levels deep")
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if -_SMALL_INT < value < _SMALL_INT else ["i", hex(value)]
    if kind is float:
        return value
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return [_TAGS[kind], *[encode(item, depth + 1) for item in value]]
    if kind is dict:
        out = ["d"]
        for key, item in value.items():
            out.append(encode(key, depth + 1))
            out.append(encode(item, depth + 1))
        return out
    if kind is bytes:
        return ["b", value.hex()]
    if kind is complex:
        return ["c", value.real, value.imag]
    raise PlainDataError(f"a {_type_name(value)} is not plain data (only exact builtin types cross the process "
                         "boundary)")


_TAGS = {list: "l", tuple: "t", set: "s", frozenset: "f"}


def decode(tree, depth=0):
    if depth > MAX_DEPTH:
        raise PlainDataError(f"nested more than {MAX_DEPTH} levels deep")
    kind = type(tree)
    if kind is str or kind is bool or kind is int or kind is float or tree is None:
        return tree
    if kind is not list or not tree or type(tree[0]) is not str:
        raise PlainDataError("malformed value")
    tag, items = tree[0], tree[1:]
    if tag == "l":
        return [decode(item, depth + 1) for item in items]
    if tag == "t":
        return tuple(decode(item, depth + 1) for item in items)
    if tag == "s":
        return set(decode(item, depth + 1) for item in items)
    if tag == "f":
        return frozenset(decode(item, depth + 1) for item in items)
    if tag == "d":
        if len(items) % 2:
            raise PlainDataError("malformed dict")
        return {decode(items[i], depth + 1): decode(items[i + 1], depth + 1) for i in range(0, len(items), 2)}
    if tag == "i" and len(items) == 1 and type(items[0]) is str:
        return int(items[0], 16)
    if tag == "b" and len(items) == 1 and type(items[0]) is str:
        return bytes.fromhex(items[0])
    if tag == "c" and len(items) == 2 and all(type(x) in (int, float) for x in items):
        return complex(items[0], items[1])
    raise PlainDataError("malformed value")


def _type_name(value):
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def send(fd, message):
    data = json.dumps(message).encode()
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def receive(fd):
    header = _read_exact(fd, 4)
    if header is None:
        return None
    size = struct.unpack(">I", header)[0]
    if size > MAX_FRAME_BYTES:
        raise PlainDataError(f"a message of {size} bytes is over the limit")
    body = _read_exact(fd, size)
    return None if body is None else json.loads(body)


def _read_exact(fd, n):
    chunks, remaining = [], n
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# ---- the child: runs the candidate and serves calls (untrusted from the moment the candidate runs) ----


def serve_candidate(source, requests, replies):
    requests, replies = fcntl.fcntl(requests, fcntl.F_DUPFD, 10), fcntl.fcntl(replies, fcntl.F_DUPFD, 10)
    os.dup2(requests, 3)
    os.dup2(replies, 4)
    os.closerange(5, 1 << 16)
    # stdout joins stderr, the run's (size-capped) details; stdin is empty.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    for signum in (signal.SIGALRM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    namespace = {"__name__": "solution", "__builtins__": builtins}
    try:
        exec(compile(source, "solution.py", "exec"), namespace)
    except BaseException as exc:
        send(4, ["load_failed", _describe(exc)])
        os._exit(0)
    send(4, ["loaded", [name for name, value in namespace.items() if type(name) is str and callable(value)]])
    while True:
        request = receive(3)
        if request is None:
            os._exit(0)
        name, args, kwargs = request
        args, kwargs = decode(args), decode(kwargs)
        try:
            value = namespace[name](*args, **kwargs)
        except BaseException as exc:
            reply = ["raised", _builtin_exception_name(exc), str(exc)[:MAX_REASON_CHARS]]
        else:
            try:
                reply = ["returned", encode(value)]
            except (PlainDataError, RecursionError) as exc:
                reply = ["refused", str(exc)[:MAX_REASON_CHARS]]
        try:
            reply.append([encode(args), encode(kwargs)])
        except (PlainDataError, RecursionError):
            reply.append(None)
        send(4, reply)


def _builtin_exception_name(exc):
    """The nearest builtin class of `exc`, so that `except ValueError` catches what the callee raised."""
    for klass in type(exc).__mro__:
        if klass.__module__ == "builtins":
            return klass.__name__
    return "Exception"


def _reason(exc):
    """Why a test failed. An assertion's message is the test's own and may quote expected values, which
    must not leave this process (a later run's candidate could find them in the worker's memory)."""
    if isinstance(exc, AssertionError):
        tb, line = exc.__traceback__, None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.startswith("test_"):
                line = tb.tb_lineno
            tb = tb.tb_next
        return "AssertionError" + ("" if line is None else f" at line {line} of the test")
    return _describe(exc)


def _describe(exc):
    return f"{type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]


# ---- the harness ----


class TestTimeout(BaseException):
    pass


class CandidateFailed(Exception):
    """The child could not answer a call: it died, hung, sent what is not plain data, or never loaded."""


class CandidateRaised(Exception):
    """The callee raised an exception that is not a builtin `Exception` (SystemExit, KeyboardInterrupt...)."""


class Child:
    def __init__(self, source):
        request_r, self.requests = os.pipe()
        self.replies, reply_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                serve_candidate(source, request_r, reply_w)
            finally:
                os._exit(0)
        os.close(request_r)
        os.close(reply_w)
        self.names = frozenset()
        self.load_error = None
        self.broken = False
        self.killed = False

    def wait_loaded(self):
        reply = self._reply()
        if reply and reply[0] == "loaded" and type(reply[1]) is list:
            self.names = frozenset(n for n in reply[1] if type(n) is str and n.isidentifier())
        else:
            self.load_error = reply[1] if reply and reply[0] == "load_failed" and type(reply[1]) is str else \
                "the candidate did not load"
            self.broken = True

    def call(self, name, args, kwargs):
        if self.broken:
            raise CandidateFailed(self.load_error or "the candidate's process is gone")
        try:
            payload = [name, encode(list(args)), encode(kwargs)]
        except PlainDataError as exc:
            raise PlainDataError(f"argument: {exc}") from None
        self.broken = True  # until a well-formed reply arrives
        try:
            send(self.requests, payload)
            reply = self._reply()
        except OSError:
            raise CandidateFailed("the candidate's process is gone") from None
        if reply is None:
            raise CandidateFailed(f"the candidate's process ended during a call to {name}()")
        if type(reply) is not list or len(reply) < 2 or reply[0] not in ("returned", "raised", "refused"):
            raise CandidateFailed("malformed reply")
        outcome = reply[0]
        well_formed = {"returned": len(reply) == 3,
                       "raised": len(reply) == 4 and type(reply[1]) is str and type(reply[2]) is str,
                       "refused": len(reply) == 3 and type(reply[1]) is str}[outcome]
        if not well_formed:
            raise CandidateFailed("malformed reply")
        value = decode(reply[1]) if outcome == "returned" else None
        moved = reply[-1]
        if moved is not None:
            if type(moved) is not list or len(moved) != 2:
                raise CandidateFailed("malformed reply")
            new_args, new_kwargs = decode(moved[0]), decode(moved[1])
            if type(new_args) is not list or len(new_args) != len(args) or type(new_kwargs) is not dict:
                raise CandidateFailed("malformed reply")
            for old, new in zip(args, new_args):
                refresh(old, new)
            for key, old in kwargs.items():
                if key in new_kwargs:
                    refresh(old, new_kwargs[key])
        self.broken = False
        if outcome == "refused":
            raise PlainDataError(f"{name}() returned what is not plain data: {reply[1]}")
        if outcome == "raised":
            raise _exception(reply[1], reply[2])
        return value

    def _reply(self):
        try:
            return receive(self.replies)
        except (ValueError, PlainDataError, RecursionError) as exc:
            raise CandidateFailed(f"unreadable reply: {exc}") from None

    def kill(self):
        if self.killed:
            return
        self.killed = self.broken = True
        for fd in (self.requests, self.replies):
            os.close(fd)
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _exception(name, message):
    klass = getattr(builtins, name, None) if name in BUILTIN_NAMES else None
    if isinstance(klass, type) and issubclass(klass, Exception):
        try:
            return klass(message)
        except Exception:
            return klass()
    return CandidateRaised(f"{name}: {message}")


def refresh(old, new):
    """Make the caller's argument `old` hold what the callee left in `new`, in place where it is mutable."""
    if type(old) is list and type(new) is list:
        old[:] = [refresh(o, n) for o, n in zip(old, new)] + new[len(old):]
        return old
    if type(old) is dict and type(new) is dict:
        merged = {key: refresh(old[key], value) if key in old else value for key, value in new.items()}
        old.clear()
        old.update(merged)
        return old
    if type(old) is set and type(new) is set:
        old.clear()
        old.update(new)
        return old
    if type(old) is tuple and type(new) is tuple and len(old) == len(new):
        for o, n in zip(old, new):
            refresh(o, n)
        return old
    return new


def stub(child_of, name):
    """A function standing for the candidate's `name`: the call crosses into the candidate's process."""

    def call(*args, **kwargs):
        return child_of().call(name, args, kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def global_names(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if type(const) is type(code):
            names |= global_names(const)
    return names


def main():
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    report = os.dup(1)
    # Only the read-only standard library: the candidate shares the writable work directory.
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != os.getcwd()]
    sys.path_importer_cache.clear()
    # stdin holds length-prefixed frames read exactly, so no test is in memory before its turn.
    header = receive(0)
    source, budget, count = header["candidate"], float(header["budget"]), int(header["tests"])
    entry_point = header.get("entry_point")

    def on_alarm(signum, frame):
        raise TestTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    current = {}

    def wait_loaded(child):
        signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            child.wait_loaded()
        except (TestTimeout, CandidateFailed) as exc:
            child.broken = True
            child.load_error = f"loading the candidate: {'timed out' if isinstance(exc, TestTimeout) else exc}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return child

    def fresh_child():
        current["child"] = child = Child(source)
        return child

    child = fresh_child()  # before any test is read
    namespace = {"__name__": "tests", "__builtins__": builtins}
    setup_error = None
    if header.get("setup"):  # while the candidate loads
        try:
            exec(compile(header["setup"], "setup.py", "exec"), namespace)
        except BaseException as exc:
            setup_error = "the setup code failed: " + _describe(exc)
    trusted = set(namespace)
    wait_loaded(child)
    stubs = {}
    passed, reasons = [], []
    for index in range(count):
        if child.killed and child.load_error is None:
            child = wait_loaded(fresh_child())  # a new process, forked before the next test is read
        test = receive(0)
        if setup_error or child.load_error is not None:
            passed.append(False)
            reasons.append(setup_error or child.load_error)
            continue
        ok, reason = False, None
        try:
            code = compile(test, f"test_{index}.py", "exec")
            for name in global_names(code) & child.names:
                if name not in BUILTIN_NAMES and name not in trusted and (name not in namespace or name in stubs):
                    stubs[name] = namespace[name] = stub(lambda: current["child"], name)
            if entry_point:
                namespace[entry_point] = stubs[entry_point] = stub(lambda: current["child"], entry_point)
            signal.setitimer(signal.ITIMER_REAL, budget)
            try:
                exec(code, namespace)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            ok = True
        except TestTimeout:
            reason = f"timed out after {budget:g}s"
            child.broken = True
        except BaseException as exc:
            reason = _reason(exc)
        if child.broken:
            child.kill()
        passed.append(ok)
        reasons.append(reason)
    nonce = receive(0)
    os.write(report, f"{nonce} {json.dumps({'passed': passed, 'reasons': reasons})}\n".encode())
    os._exit(0)  # the sandbox worker kills what is left of the candidate's process


main()
