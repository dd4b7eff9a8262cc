"""`Sandbox.run` and the `rlvf-sandbox` CLI on ordinary programs."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from rlvf_sandbox import RunResult, Sandbox, SandboxUnavailable, UnisolatedWarning, cli, parse_size
from rlvf_sandbox import sandbox as sandbox_module

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


@pytest.fixture(scope="module")
def sandbox():
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    with Sandbox(workers=2, timeout=5) as box:
        yield box


def test_parse_size():
    assert parse_size("512M") == 512 << 20
    assert parse_size("1g") == 1 << 30
    assert parse_size("64KiB") == 64 << 10
    assert parse_size(1000) == 1000
    with pytest.raises(ValueError, match="512M"):
        parse_size("lots")


def test_runs_python_with_stdin_files_and_args(sandbox):
    result = sandbox.run(
        "import sys\nprint(input()[::-1], open('data/in.txt').read(), sys.argv[1:])\n"
        "print('warning', file=sys.stderr)\nsys.exit(3)",
        stdin="abc\n", files={"data/in.txt": "payload"}, args=["x", "y"],
    )
    assert result.stdout == b"cba payload ['x', 'y']\n"
    assert result.stderr == b"warning\n"
    assert result.exit_code == 3 and not result.ok and result.killed_by is None
    assert result.wall_seconds > 0 and result.cpu_seconds >= 0 and result.peak_memory > 0


def test_runs_a_command(sandbox):
    result = sandbox.run(argv=["/bin/sh", "-c", "echo $HOME; id -u; cat"], stdin=b"in")
    assert result.ok
    assert result.stdout.decode().split("\n") == ["/tmp", "65534", "in"]


def test_exception_exit_status_and_traceback(sandbox):
    result = sandbox.run("def f():\n    raise ValueError('boom')\nf()")
    assert result.exit_code == 1
    assert "ValueError: boom" in result.stderr_text and "main.py" in result.stderr_text
    assert "run_source" not in result.stderr_text  # the worker's own frames are not shown
    assert sandbox.run("import sys; sys.exit()").ok
    assert sandbox.run("raise SystemExit('bad')").exit_code == 1


def test_signals_are_reported(sandbox):
    result = sandbox.run("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert result.signal == 11 and result.killed_by == "signal:SIGSEGV" and result.exit_code is None


def test_sees_only_a_scrubbed_environment(sandbox, monkeypatch):
    result = sandbox.run("import os; print(sorted(os.environ))")
    assert result.stdout == b"['HOME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE', 'TMPDIR']\n"


def test_run_many_keeps_order_and_runs_in_parallel(sandbox):
    jobs = [{"code": f"import time; time.sleep(0.3); print({i})"} for i in range(4)]
    results = sandbox.run_many(jobs)
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(4)]
    assert all(r.ok for r in results)


def test_fresh_interpreter_mode():
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    with Sandbox(workers=1, fresh_interpreter=True) as box:
        result = box.run("import sys; print(sys.argv, input())", stdin="hi", args=["a"])
        assert result.stdout == b"['main.py', 'a'] hi\n"


def test_exactly_one_of_code_or_argv(sandbox):
    with pytest.raises(ValueError, match="exactly one"):
        sandbox.run()
    with pytest.raises(ValueError, match="relative"):
        sandbox.run("pass", files={"/etc/passwd": "x"})


def test_refuses_to_run_without_bubblewrap(monkeypatch):
    monkeypatch.setattr(sandbox_module, "find_bwrap", lambda: None)
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        Sandbox()


def test_unisolated_mode_warns_and_runs():
    with pytest.warns(UnisolatedWarning, match="WITHOUT"):
        box = Sandbox(isolation="none", workers=1)
    with box:
        result = box.run("import os; print(open('f').read(), os.getcwd() == os.environ['HOME'])",
                         files={"f": "x"})
        assert result.stdout == b"x True\n"
        assert box.run("while True: pass", timeout=0.5).timed_out


@needs_bwrap
def test_cli_runs_a_file(tmp_path, capsys):
    program = tmp_path / "prog.py"
    program.write_text("import sys\nprint(sys.argv[1:], input())\nsys.exit(4)\n")
    stdin = tmp_path / "in.txt"
    stdin.write_text("line\n")
    code = cli.main(["run", str(program), "--timeout", "5", "--memory", "256M", "--stdin", str(stdin),
                     "--", "a", "--b"])
    out, err = capsys.readouterr()
    assert code == 4
    assert out == "['a', '--b'] line\n"
    assert "exit=4" in err


@needs_bwrap
def test_cli_json_and_timeout(tmp_path, capsys):
    program = tmp_path / "spin.py"
    program.write_text("while True: pass\n")
    assert cli.main(["run", str(program), "--timeout", "0.5", "--json"]) == cli.TIMEOUT_EXIT
    report = json.loads(capsys.readouterr().out)
    assert report["timed_out"] and report["killed_by"] == "timeout"


@needs_bwrap
def test_cli_check(capsys):
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "uid 65534" in out and "network blocked" in out


def test_result_dict_decodes_text():
    result = RunResult(exit_code=0, stdout=b"o", stderr=b"e", timed_out=False, killed_by=None,
                       wall_seconds=0.1, cpu_seconds=0.1, peak_memory=1)
    assert result.ok and result.to_dict()["stdout"] == "o"


def test_worker_loss_is_a_result_not_a_crash(sandbox):
    # Simulate the worker dying mid-run (as the host's OOM killer could): the run reports it.
    worker = sandbox._acquire()
    os.kill(worker.process.pid, 9)
    sandbox._idle.put(worker)
    results = [sandbox.run("print(1)") for _ in range(3)]
    assert any(r.killed_by == "worker_lost" for r in results)
    assert results[-1].ok
