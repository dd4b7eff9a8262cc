"""`rlvf-sandbox`: run one program in the sandbox, or check what isolation this machine provides.

    rlvf-sandbox run prog.py --timeout 5 --memory 512M [--stdin input.txt] [--file data.csv] [-- ARGS...]
    rlvf-sandbox run --json /bin/sh -- -c 'echo hi'
    rlvf-sandbox check
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from rlvf_sandbox.sandbox import Sandbox, SandboxError

TIMEOUT_EXIT = 124  # what coreutils' timeout returns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlvf-sandbox", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a Python file (*.py) or a command inside the sandbox")
    run.add_argument("program", help="a .py file on the host, or a command visible inside the sandbox; "
                     "its arguments go after --")
    _add_sandbox_options(run)
    run.add_argument("--stdin", metavar="FILE", help="feed this file (or - for this process's stdin)")
    run.add_argument("--file", action="append", default=[], metavar="PATH[:NAME]",
                     help="copy a host file into the sandbox's tmp (repeatable)")
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    check = commands.add_parser("check", help="report the isolation this machine provides")
    _add_sandbox_options(check)
    argv = sys.argv[1:] if argv is None else argv
    # The program's own arguments follow "--", so options may come before or after the program.
    split = argv.index("--") if "--" in argv else len(argv)
    options = parser.parse_args(argv[:split])
    options.args = argv[split + 1:]
    try:
        with _sandbox(options) as sandbox:
            return _run(sandbox, options) if options.command == "run" else _check(sandbox)
    except (SandboxError, OSError, ValueError) as exc:
        print(f"rlvf-sandbox: {exc}", file=sys.stderr)
        return 2


def _add_sandbox_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=5.0, help="wall-clock seconds (default 5)")
    parser.add_argument("--memory", default="512M", help="address-space limit, e.g. 512M (default)")
    parser.add_argument("--processes", type=int, default=64, help="process limit (default 64)")
    parser.add_argument("--no-seccomp", action="store_true", help="do not install the seccomp filter")
    parser.add_argument("--fresh-interpreter", action="store_true",
                        help="exec a new python per program instead of forking the worker's")
    parser.add_argument("--unisolated", action="store_true",
                        help="run WITHOUT isolation when bubblewrap is unavailable (unsafe)")


def _sandbox(options) -> Sandbox:
    return Sandbox(timeout=options.timeout, memory=options.memory, processes=options.processes, workers=1,
                   isolation="none" if options.unisolated else "bwrap",
                   seccomp=False if options.no_seccomp else None, fresh_interpreter=options.fresh_interpreter)


def _run(sandbox: Sandbox, options) -> int:
    args = options.args
    files = {}
    for spec in options.file:
        path, _, name = spec.partition(":")
        with open(path, "rb") as f:
            files[name or os.path.basename(path)] = f.read()
    stdin = b""
    if options.stdin == "-":
        stdin = sys.stdin.buffer.read()
    elif options.stdin:
        with open(options.stdin, "rb") as f:
            stdin = f.read()
    if options.program.endswith(".py") and os.path.isfile(options.program):
        with open(options.program, encoding="utf-8") as f:
            result = sandbox.run(f.read(), args=args, stdin=stdin, files=files)
    else:
        result = sandbox.run(argv=[options.program, *args], stdin=stdin, files=files)
    if options.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        sys.stdout.buffer.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(result.stderr)
        print(f"[rlvf-sandbox] exit={result.exit_code} killed_by={result.killed_by} "
              f"wall={result.wall_seconds:.3f}s cpu={result.cpu_seconds:.3f}s "
              f"peak_memory={result.peak_memory / 2**20:.1f}MiB", file=sys.stderr)
    if result.timed_out:
        return TIMEOUT_EXIT
    if result.signal is not None:
        return 128 + result.signal
    return result.exit_code if result.exit_code is not None else 1


def _check(sandbox: Sandbox) -> int:
    probe = sandbox.run(
        "import os, socket\n"
        "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=1); net = 'reachable'\n"
        "except OSError as e:\n    net = 'blocked (' + type(e).__name__ + ')'\n"
        "print('uid', os.getuid()); print('pid', os.getpid()); print('network', net)\n"
        "print('processes visible', sum(p.isdigit() for p in os.listdir('/proc')))\n"
        "print('environment', sorted(os.environ))\n"
    )
    print(f"isolation: {sandbox.isolation}   seccomp: {'on' if sandbox.seccomp else 'off'}   "
          f"python: {sandbox.python}")
    print(probe.stdout_text + probe.stderr_text, end="")
    return 0 if probe.ok else 1


if __name__ == "__main__":
    sys.exit(main())
