"""The `math` reward as the trainer uses it: plugin registration, batch calls, metrics, cache, and hard
time limits from several threads at once."""

import importlib.metadata
import sys
import threading
import time

import pytest

from rlvf.errors import RewardError
from rlvf_math import MathReward
from rlvf_math.pool import VerifierPool

# A stand-in worker speaking the pool's line protocol; the prediction "hang" never returns.
HANGING_WORKER = r"""
import json, sys, time
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    task = json.loads(line)
    if task["pred"] == "hang":
        time.sleep(3600)
    print(json.dumps({"correct": task["gold"] == task["pred"], "parse_failure": False}), flush=True)
"""

PATHOLOGICAL = [
    r"\boxed{10^{10^{10^{10}}}}",
    r"\boxed{100000!}",
    r"\boxed{" + "(" * 5_000 + "1" + ")" * 5_000 + "}",
    r"\boxed{" + r"\sqrt{" * 2_000 + "2" + "}" * 2_000 + "}",
    r"\boxed{2^{3^{4^{5^{6^{7}}}}}}",
    r"\boxed{\frac{1}{100000!} + 10^{-10^{9}}}",
    "9" * 50_000,
    r"\boxed{" + "x+" * 400 + "x}",
    r"\boxed{(x+2)^{100000} - (x+1)^{99999}}",
    r"\boxed{\sin(\sin(\sin(\sin(\sin(\sin(x^{999999}))))))}",
]


@pytest.fixture(scope="module")
def reward():
    built = MathReward(timeout=5.0, workers=2)
    yield built
    built.close()


def test_plugin_registers_the_math_reward():
    entry_points = [ep for ep in importlib.metadata.entry_points(group="rlvf") if ep.name == "math"]
    assert entry_points, "rlvf-math is not installed (pip install -e plugins/rlvf-math)"
    registered = []
    entry_points[0].load().register_rewards(
        register=lambda reward, name=None, description=None: registered.append((reward, name, description)))
    assert registered == [(MathReward, "math", registered[0][2])]
    assert "equivalent" in registered[0][2]


def test_missing_answer_column_is_named(reward):
    with pytest.raises(RewardError, match="'answer'"):
        reward(["p"], ["#### 4"], solution=["4"])


def test_scores_strings_and_chat_completions(reward):
    completions = [
        r"So the answer is $\boxed{\dfrac{1}{2}}$.",
        [{"role": "assistant", "content": "She pays 3 * 4 = 12 dollars.\n#### 12"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "text", "text": r"\boxed{7}"}]}],
        "I am not sure.",
        r"\boxed{5}",
    ]
    scores = reward(["p"] * 5, completions, answer=["0.5", 12, "8", "3", None])
    assert scores == [1.0, 1.0, 0.0, 0.0, None]


def test_a_calculation_left_undone_does_not_answer_a_numeric_gold(reward):
    """A GRPO run on arithmetic learned to box the question's expression (`\\boxed{4 * 10}` for "Calculate
    4 * 10"), which sympy finds equal to 40; a number, a fraction or scientific notation still answers."""
    undone = [r"\boxed{4 * 10}", r"\boxed{21 - 1}", r"\boxed{4 \times 10}", r"\boxed{3 - (-2)}", r"\boxed{6 \div 2}"]
    done = [r"\boxed{40}", r"\boxed{20}", r"\boxed{4 \times 10^{1}}", r"\boxed{5}", r"\boxed{\frac{6}{2}}"]
    golds = ["40", "20", "40", "5", "3"]
    assert reward(["p"] * 5, undone, answer=golds) == [0.0] * 5
    assert reward(["p"] * 5, done, answer=golds) == [1.0] * 5
    lenient = MathReward(workers=1, allow_unevaluated=True)
    try:
        assert lenient(["p"] * 5, undone, answer=golds) == [1.0] * 5
    finally:
        lenient.close()
    # a symbolic gold still takes any equivalent expression
    assert reward(["p"] * 2, [r"\boxed{x + x}", r"\boxed{1 + \sqrt{2}}"], answer=["2x", "\\sqrt{2} + 1"]) == [1.0, 1.0]


def test_metrics_count_and_reset(reward):
    reward.pop_metrics()
    batch = [r"\boxed{x^2-1}", r"\boxed{(x-1)(x+1)}", r"\boxed{(x-1)(x+1)}", "no answer here"]
    scores = reward(["p"] * 4, batch, answer=["(x+1)(x-1)"] * 4)
    assert scores == [1.0, 1.0, 1.0, 0.0]
    metrics = reward.pop_metrics()
    assert metrics["verified"] == 4
    assert metrics["no_answer"] == 1
    assert metrics["cache_hits"] >= 1  # the repeated prediction is verified once
    reward(["p"], [r"\boxed{x^2-1}"], answer=["(x+1)(x-1)"])
    assert reward.pop_metrics()["cache_hits"] == 1
    assert reward.pop_metrics()["verified"] == 0


def test_bad_options_are_refused():
    with pytest.raises(ValueError):
        MathReward(timeout=0)
    with pytest.raises(ValueError):
        MathReward(workers=0)


@pytest.mark.timeout(90)
def test_pathological_inputs_return_in_time_from_several_threads(reward):
    results: dict[int, list] = {}
    elapsed: dict[int, float] = {}

    def call(thread_index: int):
        start = time.monotonic()
        results[thread_index] = reward(["p"] * (len(PATHOLOGICAL) + 1), [*PATHOLOGICAL, r"\boxed{2}"],
                                       answer=["2"] * (len(PATHOLOGICAL) + 1))
        elapsed[thread_index] = time.monotonic() - start

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=80)
    assert not any(thread.is_alive() for thread in threads)
    for scores in results.values():
        assert scores == [0.0] * len(PATHOLOGICAL) + [1.0]
    # each verification is bounded by `timeout`; allow worker start-up and a loaded machine
    assert max(elapsed.values()) < 60


@pytest.mark.timeout(60)
def test_a_hanging_verification_is_killed_and_the_worker_replaced():
    pool = VerifierPool(2, command=[sys.executable, "-c", HANGING_WORKER])
    try:
        tasks = [{"gold": "1", "pred": p, "rel_tol": 1e-6} for p in ("1", "hang", "2", "hang", "1")]
        start = time.monotonic()
        outcomes = pool.run(tasks, timeout=1.0)
        assert time.monotonic() - start < 20
        assert [o.status for o in outcomes] == ["ok", "timeout", "ok", "timeout", "ok"]
        assert [o.correct for o in outcomes] == [True, False, False, False, True]
        assert [o.status for o in pool.run(tasks[:1], timeout=1.0)] == ["ok"]  # replacements work
    finally:
        pool.close()


@pytest.mark.timeout(60)
def test_timeouts_score_zero_and_are_counted_from_threads():
    reward = MathReward(timeout=1.0, workers=2)
    reward._pool.close()
    reward._pool = VerifierPool(2, command=[sys.executable, "-c", HANGING_WORKER])
    outputs = []

    def call():
        outputs.append(reward(["p", "p"], [r"\boxed{hang}", r"\boxed{x+1}"], answer=["x + 1", "1 + x"]))

    try:
        threads = [threading.Thread(target=call) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=50)
        assert outputs == [[0.0, 0.0]] * 3  # the stand-in worker compares text only
        metrics = reward.pop_metrics()
        assert metrics["timeouts"] >= 1
        assert metrics["timeouts"] + metrics["cache_hits"] >= 3
    finally:
        reward.close()
