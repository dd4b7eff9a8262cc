"""rlvf-sandbox's function tests: the candidate runs in its own process, the tests in the harness, and only
plain data crosses between them. Real sandbox, real programs."""

from __future__ import annotations

import shutil

import pytest

from rlvf_sandbox import FunctionTests, Sandbox, run_function_tests

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, timeout=10) as box:
        yield box


def run(sandbox, candidate, tests, **options):
    [report] = run_function_tests(sandbox, [FunctionTests(candidate, tests, **options)])
    return report


def test_every_plain_type_crosses_exactly(sandbox):
    values = ("None, True, False, 0, -7, 2**200, -(3**90), 1.5, -0.0, float('inf'), 1e-300, 2+3j, 'é\\u2603', "
              "b'\\x00\\xff', [1, [2, (3,)]], (1,), (), {'a': 1, (2, 3): [4], frozenset({5}): None}, {1, 'x'}, "
              "frozenset(), {}, [], '', [[[[[[1]]]]]]")
    report = run(sandbox, "def echo(x):\n    return x\n", [
        f"for value in [{values}]:\n"
        "    back = echo(value)\n"
        "    assert back == value and type(back) is type(value), (value, back)\n"
        "    if isinstance(value, float):\n"
        "        assert repr(back) == repr(value)\n",
        "import math\nassert math.isnan(echo(float('nan')))\n",
        "assert echo(2**200) is not None and echo(10**5000) == 10**5000\n",
    ])
    assert report.passed == (True, True, True), report.reasons


def test_what_is_not_plain_data_fails_that_test_with_the_reason(sandbox):
    candidate = ("class Box:\n    pass\n\nclass Int(int):\n    pass\n\n"
                 "def box():\n    return Box()\n\ndef subclass():\n    return Int(3)\n\n"
                 "def generator():\n    return (i for i in range(3))\n\ndef fine():\n    return 3\n\n"
                 "def takes(f):\n    return 1\n")
    report = run(sandbox, candidate, ["box()", "assert subclass() == 3", "list(generator())",
                                      "assert fine() == 3", "takes(lambda: 1)"])
    assert report.passed == (False, False, False, True, False)
    assert "Box is not plain data" in report.reasons[0]
    assert "Int is not plain data" in report.reasons[1]
    assert "generator is not plain data" in report.reasons[2]
    assert "argument" in report.reasons[4] and "function is not plain data" in report.reasons[4]


def test_in_place_changes_to_arguments_come_back(sandbox):
    candidate = ("def grow(xs, extra=None):\n    xs.append(len(xs))\n    xs[0][0] = 'changed'\n"
                 "    if extra is not None:\n        extra['seen'] = True\n\n"
                 "def drop(s):\n    s.discard(1)\n    return len(s)\n")
    report = run(sandbox, candidate, [
        "inner = ['old']\nxs = [inner]\nextra = {}\nassert grow(xs, extra=extra) is None\n"
        "assert xs == [['changed'], 1] and xs[0] is inner and extra == {'seen': True}\n",
        "s = {1, 2}\nassert drop(s) == 1 and s == {2}\n",
    ])
    assert report.passed == (True, True), report.reasons


def test_exceptions_come_back_as_the_same_builtin_type(sandbox):
    candidate = ("class Mine(KeyError):\n    pass\n\n"
                 "def check(x):\n    if x < 0:\n        raise ValueError('negative')\n    if x == 0:\n"
                 "        raise Mine('zero')\n    if x == 1:\n        raise SystemExit(0)\n    return x\n")
    report = run(sandbox, candidate, [
        "try:\n    check(-1)\n    raise AssertionError('no exception')\nexcept ValueError as exc:\n"
        "    assert 'negative' in str(exc)\n",
        "try:\n    check(0)\n    raise AssertionError('no exception')\nexcept KeyError:\n    pass\n",
        "check(1)",  # SystemExit from the candidate fails the test; it does not end the harness
        "assert check(5) == 5",
    ])
    assert report.passed == (True, True, False, True), report.reasons
    assert "SystemExit" in report.reasons[2]


def test_a_hang_or_a_crash_fails_only_its_test(sandbox):
    candidate = ("import os\n\ndef f(x):\n    if x == 'hang':\n        while True:\n            pass\n"
                 "    if x == 'die':\n        os._exit(3)\n    return x\n")
    report = run(sandbox, candidate, ["assert f(1) == 1", "f('hang')", "assert f(2) == 2", "f('die')",
                                      "assert f(3) == 3"], per_test_seconds=1.0)
    assert report.passed == (True, False, True, False, True), report.reasons
    assert "timed out" in report.reasons[1]
    assert "ended during a call" in report.reasons[3]


def test_a_candidate_that_does_not_load_fails_every_test(sandbox):
    for candidate, reason in (("def f(:\n", "SyntaxError"), ("raise RuntimeError('boom')\n", "boom"),
                              ("while True:\n    pass\n", "timed out")):
        report = run(sandbox, candidate, ["assert f() is None", "pass"], per_test_seconds=1.0)
        assert report.passed == (False, False)
        assert reason in report.reasons[0], report.reasons


def test_only_the_candidates_own_names_are_stubs(sandbox):
    """A candidate cannot stand in for builtins, the trusted setup's helpers, or names the tests define."""
    candidate = ("def len(x):\n    return 99\n\ndef helper(x):\n    return 0\n\ndef double(x):\n"
                 "    return 2 * x\n\ndef own(x):\n    return 'candidate'\n")
    report = run(sandbox, candidate, [
        "assert len([1]) == 1 and double(len([1, 2])) == 4",
        "assert helper(3) == 3",
        "def own(x):\n    return 'test'\nassert own(1) == 'test'",
    ], setup="def helper(x):\n    return x\n")
    assert report.passed == (True, True, True), report.reasons


def test_the_entry_point_is_bound_over_the_setups_stub(sandbox):
    setup = "def add(a, b):\n    \"\"\"Add a and b.\"\"\"\n"
    tests = ["def check(candidate):\n    assert candidate(2, 3) == 5\n\ncheck(add)\n"]
    assert run(sandbox, setup + "    return a + b\n", tests, setup=setup, entry_point="add").passed == (True,)
    assert run(sandbox, setup + "    return a - b\n", tests, setup=setup, entry_point="add").passed == (False,)
