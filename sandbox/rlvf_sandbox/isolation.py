"""How a sandbox worker is started: the bubblewrap command line, the seccomp filter, the python inside."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import tempfile
from importlib import resources

SANDBOX_UID = 65534  # "nobody": owns nothing on the host
SYSTEM_PYTHON = "/usr/bin/python3"
# Read-only system directories (symlinks such as /lib -> usr/lib on merged-/usr systems are recreated).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The parts of /etc programs need; the rest (credentials, package manager config) stays out of sight.
ETC_ENTRIES = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group",
               "nsswitch.conf", "hosts", "protocols", "services", "mime.types", "ssl")
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
SECCOMP_FD_PLACEHOLDER = "{seccomp_fd}"  # replaced by the fd number once the worker's pipe exists

# Syscalls denied with EPERM by the optional seccomp filter: ways to reach another process or the kernel
# outside what the namespaces already block, and IPC objects that would outlive a run.
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    "keyctl", "add_key", "request_key",
    "shmget", "semget", "msgget", "mq_open",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",  # io_uring could open sockets unseen
    "kexec_load", "init_module", "finit_module", "delete_module", "acct", "swapon", "swapoff", "reboot",
)


def worker_source() -> str:
    return resources.files("rlvf_sandbox").joinpath("_worker_main.py").read_text()


def find_bwrap() -> str | None:
    return shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.access(p, os.X_OK)),
                                         None)


def default_python() -> str:
    """Debian's system python: it lives under /usr, which the sandbox already sees read-only."""
    import sys

    return SYSTEM_PYTHON if os.access(SYSTEM_PYTHON, os.X_OK) else sys.executable


def python_prefix_bind(python: str) -> list[str]:
    """A python outside the system directories (pyenv, a venv's base) is bound read-only at its own path."""
    real = os.path.realpath(python)
    if any(real == d or real.startswith(d + "/") for d in SYSTEM_DIRS):
        return []
    prefix = os.path.dirname(os.path.dirname(real))
    return ["--ro-bind", prefix, prefix]


def bwrap_command(bwrap: str, python: str, *, tmp_size: int, seccomp: bool) -> list[str]:
    cmd = [
        bwrap,
        "--unshare-all", "--unshare-user", "--disable-userns",  # own user, pid, net, ipc, uts, mount ns
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        "--die-with-parent", "--new-session", "--as-pid-1",
        "--hostname", "sandbox", "--clearenv",
    ]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    for entry in ETC_ENTRIES:
        path = os.path.join("/etc", entry)
        if os.path.lexists(path):
            cmd += ["--ro-bind", path, path]
    cmd += python_prefix_bind(python)
    cmd += [
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(tmp_size), "--perms", "0700", "--tmpfs", "/tmp",
        "--size", str(tmp_size), "--perms", "0700", "--tmpfs", "/dev/shm",
        # bubblewrap builds the root and /dev as tmpfs owned by the sandbox uid: make them read-only so
        # /tmp and /dev/shm (size-capped, wiped after each run) are the only writable places.
        "--remount-ro", "/dev", "--remount-ro", "/",
        "--chdir", "/tmp",
    ]
    if seccomp:
        cmd += ["--seccomp", SECCOMP_FD_PLACEHOLDER]
    return [*cmd, python, "-S", "-E", "-s", "-c", worker_source(), "/tmp"]


def unisolated_command(python: str, work_dir: str) -> list[str]:
    return [python, "-S", "-E", "-s", "-c", worker_source(), work_dir]


def seccomp_available() -> bool:
    try:
        import pyseccomp  # noqa: F401
    except (ImportError, OSError):  # OSError: libseccomp itself is missing
        return False
    return True


def seccomp_program() -> bytes:
    """The compiled BPF filter bubblewrap installs for the worker and so for every program it runs.

    Sockets other than AF_UNIX fail with EACCES (the network namespace has no route out anyway; this
    also closes the loopback and netlink), the syscalls in DENIED_SYSCALLS fail with EPERM, and
    syscalls of a foreign ABI (i386, x32) kill the process.
    """
    import pyseccomp

    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    rules.add_rule(pyseccomp.ERRNO(errno.EACCES), "socket", pyseccomp.Arg(0, pyseccomp.NE, socket.AF_UNIX))
    for name in DENIED_SYSCALLS:
        with contextlib.suppress(OSError, ValueError, RuntimeError):  # unknown to this kernel or libseccomp
            rules.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
    with tempfile.TemporaryFile() as f:
        rules.export_bpf(f)
        f.seek(0)
        return f.read()
