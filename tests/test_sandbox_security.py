"""Malicious programs, each run for real through the sandbox and through the `code` reward.

Every attack defines `solution()` that returns 42 only if the attack worked (or never returns). Run
directly, the program prints `solution()`; through the reward, the test is `assert solution() == 42`.
Each must be contained (no 42, score 0) and leave the host untouched: no marker file, no surviving
process, no connection to the listener, and the sandbox still works afterwards.

The fork bomb is contained by RLIMIT_NPROC (the worker runs as uid 65534 inside its own user namespace)
and by the pid namespace kill at the end of the run; the memory bombs by RLIMIT_AS and the worker's
namespace-wide memory watchdog.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import textwrap
from pathlib import Path

import pytest

from rlvf_sandbox import Sandbox

pytestmark = pytest.mark.skipif(not any(os.access(os.path.join(d, "bwrap"), os.X_OK)
                                        for d in os.environ.get("PATH", "/usr/bin").split(":")),
                                reason="bubblewrap is not installed (the project setup installs it)")

TOKEN = secrets.token_hex(8)
ENV_SECRET = f"env-secret-{TOKEN}"
FILE_SECRET = f"file-secret-{TOKEN}"
DAEMON_SECONDS = f"4242.{int(TOKEN, 16) % 10**6:06d}"  # a unique `sleep` argument to find on the host

ATTACKS = {
    "fork_bomb": """
        import os
        def solution():
            while True:
                try:
                    os.fork()
                except OSError:
                    pass
    """,
    "memory_bomb": """
        def solution():
            hoard = []
            while True:
                block = bytearray(64 << 20)
                block[::4096] = b"x" * len(block[::4096])  # touch every page
                hoard.append(block)
    """,
    "memory_bomb_many_processes": """
        import os, time
        def solution():
            for _ in range(16):
                if os.fork() == 0:
                    block = bytearray(200 << 20)
                    block[::4096] = b"x" * len(block[::4096])
                    time.sleep(60)
            time.sleep(60)
    """,
    "cpu_spin": """
        def solution():
            while True:
                pass
    """,
    "connect_to_host": """
        import socket
        def solution():
            for family in (socket.AF_INET, socket.AF_INET6):
                try:
                    with socket.socket(family) as s:
                        s.settimeout(1)
                        s.connect(("127.0.0.1", {port}) if family == socket.AF_INET else ("::1", {port}))
                        return 42
                except OSError:
                    pass
    """,
    "write_outside_tmp": """
        def solution():
            for path in {write_targets!r}:
                try:
                    with open(path, "w") as f:
                        f.write("escaped")
                    return 42
                except OSError:
                    pass
    """,
    "read_secret_files": """
        import glob, os
        def solution():
            candidates = {secret_paths!r} + glob.glob("/work/**/.sandbox-secret-*", recursive=True)
            candidates += glob.glob("/root/.sandbox-secret-*") + glob.glob("/home/*/.sandbox-secret-*")
            candidates += glob.glob(os.path.expanduser("~/.sandbox-secret-*"))
            for path in candidates:
                try:
                    if "{file_secret}" in open(path).read():
                        return 42
                except OSError:
                    pass
    """,
    "setsid_daemon": """
        import os, time
        def solution():
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execv("/bin/sleep", ["sleep", "{daemon_seconds}"])
                os._exit(0)
            time.sleep(0.2)  # let the daemon start before the run ends
    """,
    "kill_parent": """
        import os, signal, time
        def solution():
            for target in (os.getppid(), 1):
                try:
                    os.kill(target, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.2)
            try:
                os.kill(1, 0)
            except ProcessLookupError:
                return 42
    """,
    "flood_stdout": """
        import sys
        def solution():
            chunk = "x" * (1 << 20)
            for _ in range(1024):  # 1 GiB
                sys.stdout.write(chunk)
            return 42
    """,
    "read_parent_environment": """
        import os
        def solution():
            seen = str(dict(os.environ))
            for path in ("/proc/self/environ", "/proc/1/environ", "/proc/2/environ"):
                try:
                    seen += open(path, "rb").read().decode(errors="replace")
                except OSError:
                    pass
            if "{env_secret}" in seen:
                return 42
    """,
    "list_host_processes": """
        import os
        def solution():
            pids = [p for p in os.listdir("/proc") if p.isdigit()]
            commands = []
            for pid in pids:
                try:
                    commands.append(open(f"/proc/{{pid}}/cmdline", "rb").read())
                except OSError:
                    pass
            if len(pids) > 5 or any(b"pytest" in c for c in commands):
                return 42
    """,
    "tamper_with_worker": """
        import ctypes, os
        def solution():
            attempts = [lambda: os.listdir("/proc/1/fd"), lambda: open("/proc/1/mem", "rb").read(1),
                        lambda: os.open("/proc/1/fd/3", os.O_WRONLY)]
            for attempt in attempts:
                try:
                    attempt()
                    return 42
                except OSError:
                    pass
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.ptrace(16, 1, None, None) == 0:  # PTRACE_ATTACH to the worker
                return 42
    """,
    "exhaust_file_descriptors": """
        import os
        def solution():
            opened = []
            while True:
                opened.append(os.open("/dev/null", os.O_RDONLY))
                if len(opened) > 100_000:
                    return 42
    """,
}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """Secrets and targets on the host, an environment variable, and a listener on 127.0.0.1."""
    os.environ["RLVF_SANDBOX_TEST_SECRET"] = ENV_SECRET  # set before any worker starts
    project_secret = Path(__file__).resolve().parents[1] / f".sandbox-secret-{TOKEN}"
    home_secret = Path.home() / f".sandbox-secret-{TOKEN}"
    for path in (project_secret, home_secret):
        path.write_text(FILE_SECRET)
        path.chmod(0o644)  # readable by anyone: only the sandbox's mount namespace protects it
    outside = tmp_path_factory.mktemp("outside")
    outside.chmod(0o777)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    write_targets = [str(outside / "marker"), str(Path(__file__).resolve().parent / f"marker-{TOKEN}"),
                     "/marker", "/usr/marker", "/etc/marker", "/dev/marker", "/proc/marker"]
    context = {
        "port": listener.getsockname()[1],
        "write_targets": write_targets,
        "secret_paths": [str(project_secret), str(home_secret)],
        "file_secret": FILE_SECRET,
        "env_secret": ENV_SECRET,
        "daemon_seconds": DAEMON_SECONDS,
    }
    try:
        yield context, listener
    finally:
        listener.close()
        for path in (project_secret, home_secret):
            path.unlink(missing_ok=True)
        os.environ.pop("RLVF_SANDBOX_TEST_SECRET", None)


@pytest.fixture(scope="module", params=["with seccomp", "namespaces only"])
def sandbox(host, request):
    """Every attack runs with and without the seccomp filter: the namespaces must hold on their own."""
    seccomp = request.param == "with seccomp"  # True requires pyseccomp, which the project's setup installs
    with Sandbox(workers=1, timeout=3, memory="256M", processes=32, seccomp=seccomp) as box:
        yield box


@pytest.fixture(scope="module")
def reward(host):
    from rlvf_code import CodeReward

    code_reward = CodeReward(workers=1, timeout=2, memory="256M")
    yield code_reward
    code_reward.close()


def attack_source(name: str, context: dict) -> str:
    return textwrap.dedent(ATTACKS[name]).format(**context)


def host_pids_with(needle: bytes) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def namespace_populations(box: Sandbox) -> list[int]:
    """For each idle worker: how many processes its PID namespace holds, seen from the host."""
    populations = []
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parents[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    for worker in list(box._idle.queue):  # the outer bwrap process; its child is the worker (PID 1 inside)
        inner = [pid for pid, parent in parents.items() if parent == worker.process.pid]
        namespace = os.readlink(f"/proc/{inner[0]}/ns/pid")
        populations.append(sum(1 for pid in parents if _pid_namespace(pid) == namespace))
    return populations


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def assert_host_untouched(context: dict, listener: socket.socket) -> None:
    for target in context["write_targets"][:2]:
        assert not os.path.exists(target), f"the program wrote {target}"
    with pytest.raises(BlockingIOError):
        listener.accept()
    assert host_pids_with(DAEMON_SECONDS.encode()) == [], "a daemon outlived the run"
    assert os.environ["RLVF_SANDBOX_TEST_SECRET"] == ENV_SECRET


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_is_contained_by_the_sandbox(name, host, sandbox):
    context, listener = host
    result = sandbox.run(attack_source(name, context) + "\nprint(solution())\n")
    assert b"42" not in result.stdout.replace(b"x", b"")
    assert_host_untouched(context, listener)
    assert namespace_populations(sandbox) == [1], "processes survived the run inside the sandbox"
    follow_up = sandbox.run("print('still working')")
    assert follow_up.ok and follow_up.stdout == b"still working\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_scores_zero_through_the_code_reward(name, host, reward):
    context, listener = host
    completion = f"```python\n{attack_source(name, context)}\n```"
    scores = reward(["Write solution()."], [completion], tests=[["assert solution() == 42"]])
    assert scores == [0.0]
    assert_host_untouched(context, listener)
    assert namespace_populations(reward.sandbox) == [1]
    assert reward(["p"], ["def solution():\n    return 42\n"], tests=[["assert solution() == 42"]]) == [1.0]


@pytest.mark.timeout(30)
def test_limits_are_reported(sandbox, host):
    context, _ = host
    assert sandbox.run(attack_source("cpu_spin", context) + "solution()", timeout=1).killed_by == "timeout"
    flood = sandbox.run(attack_source("flood_stdout", context) + "solution()")
    assert flood.killed_by == "output_limit" and flood.stdout_truncated
    assert len(flood.stdout) <= sandbox.output_limit
    assert sandbox.run(attack_source("memory_bomb", context) + "solution()").killed_by == "memory_limit"
    fds = sandbox.run(attack_source("exhaust_file_descriptors", context) + "solution()")
    assert b"Too many open files" in fds.stderr


@pytest.mark.timeout(30)
def test_nothing_persists_between_runs_of_a_worker(sandbox):
    first = sandbox.run(
        "import os\n"
        "open('/tmp/left-behind', 'w').write('x')\n"
        "open('/dev/shm/left-behind', 'w').write('x')\n"
        "os.makedirs('/tmp/locked/inner'); os.chmod('/tmp/locked', 0)\n"
        "import ctypes; ctypes.CDLL(None).shmget(0, 4096, 0o1600)\n"  # IPC_PRIVATE | IPC_CREAT
    )
    assert first.ok, first.stderr_text
    second = sandbox.run("import os\nprint(sorted(os.listdir('/tmp')), sorted(os.listdir('/dev/shm')),"
                         " open('/proc/sysvipc/shm').read().count('\\n'))")
    # Only this run's own program file; only the header line of the SysV shared memory table.
    assert second.stdout == b"['main.py'] [] 1\n"


@pytest.mark.timeout(30)
def test_seccomp_denies_inet_sockets():
    with Sandbox(workers=1, timeout=3, seccomp=True) as sandbox:  # the project's setup installs pyseccomp
        result = sandbox.run("import socket\nsocket.socket(socket.AF_INET)")
        assert b"PermissionError" in result.stderr
        assert sandbox.run("import socket\nsocket.socketpair()").ok  # AF_UNIX (multiprocessing) still works


# A program that reads its whole memory (its copy of the worker's, which forked it) and says whether a
# 32-hex-digit string with the given sha256 is in it, raw or inside base64. It carries only the hash.
MEMORY_SCAN = r'''
import base64, ctypes, hashlib, re, sys
found = set()
for line in open("/proc/self/maps"):
    fields = line.split()
    start, end = (int(x, 16) for x in fields[0].split("-"))
    if not fields[1].startswith("r") or end - start > (256 << 20) or fields[-1].startswith("[v"):
        continue
    chunk = ctypes.string_at(start, end - start)
    found.update(re.findall(rb"[0-9a-f]{32}", chunk))
    for encoded in re.findall(rb"[A-Za-z0-9+/]{44,}", chunk):
        found.update(re.findall(rb"[0-9a-f]{32}", base64.b64decode(encoded[:len(encoded) // 4 * 4])))
print("found" if any(hashlib.sha256(h).hexdigest() in sys.argv[1:] for h in found) else "clean")
'''


@pytest.mark.timeout(60)
def test_no_run_finds_an_earlier_runs_code_input_files_or_output_in_memory(sandbox):
    """In GRPO a group's samples often run one after another on one worker: a later sample must not find an
    earlier one's program (a correct solution to copy) or its output (the expected answer to print)."""
    secrets_of = {kind: secrets.token_hex(16) for kind in ("code", "stdin", "file", "output", "late")}
    seed = secrets.token_hex(8)
    output = hashlib.md5(seed.encode()).hexdigest()  # computed inside: not in the source
    first = sandbox.run(f"SECRET = {secrets_of['code']!r}\nimport hashlib, sys\nsys.stdin.read()\n"
                        f"print(hashlib.md5({seed!r}.encode()).hexdigest())\n",
                        stdin=secrets_of["stdin"], late_stdin=secrets_of["late"],
                        files={"data.txt": secrets_of["file"]})
    assert first.ok and first.stdout == (output + "\n").encode()
    hashes = {kind: hashlib.sha256(value.encode()).hexdigest()
              for kind, value in {**secrets_of, "output": output}.items()}
    for kind, digest in hashes.items():
        scan = sandbox.run(MEMORY_SCAN, args=[digest])
        assert scan.stdout == b"clean\n", (kind, scan.stderr_text[-500:])
    # The scan does find what is there: its own input, which the worker hands it.
    own = secrets.token_hex(16)
    scan = sandbox.run(MEMORY_SCAN, args=[hashlib.sha256(own.encode()).hexdigest()], stdin=own)
    assert scan.stdout == b"found\n", scan.stderr_text[-500:]


@pytest.mark.timeout(60)
def test_late_stdin_is_not_in_the_memory_the_program_starts_from(sandbox):
    late = secrets.token_hex(16)
    digest = hashlib.sha256(late.encode()).hexdigest()
    # The program scans before it reads stdin: the late part is not in its memory yet.
    result = sandbox.run(MEMORY_SCAN + "import sys\nprint(sys.stdin.read())\n", args=[digest], late_stdin=late)
    assert result.stdout == f"clean\n{late}\n".encode(), result.stderr_text[-500:]
