"""HF against vLLM on the same prompts: sampling tokens/s, and GRPO seconds/step with each sampler, in one run.

    .venv/bin/python bench/sampler_bench.py [--prompts 16] [--n 8] [--max-new-tokens 64] [--repeats 2]
                                            [--grpo-steps 4] [--grpo-prompts 4] [--group 8] [--grpo-max-new-tokens 32]
                                            [--runs sample-hf,sample-hf-copies,sample-vllm,grpo-hf,grpo-vllm]

Sampling: the embedded SmolLM2-135M-Instruct (float32) answers `--prompts` prompts of the `arithmetic` task
`--n` times each at temperature 1, with rlvf's HF sampler (all sequences in one batch) and with a vLLM engine
in the process (eager, 1 GiB KV cache on a CPU); a short warm-up call first, then `--repeats` timed calls with
different seeds. `--prompts 4 --n 8 --max-new-tokens 32` is the sampling of bench/grpo_vs_trl.py's workload.
`sample-hf-copies` gives the HF sampler each prompt n times as separate prompts, so every copy is prefilled (as
before #20; the same tokens under a seed): the row against `sample-hf` is what prefilling a prompt once gains.
The vLLM row also gives the engine's start-up time and the time to push the model's weights into it (median
of 3). Besides wall seconds, each row gives the process's CPU seconds, which other jobs on a shared machine
disturb less. GRPO: bench/grpo_vs_trl.py's rlvf workload (beta 0, token_mean, one pass) with
`sampling.sampler` = hf and = vllm, the first step left out as warm-up. Every measurement runs in its own
subprocess (its own peak RSS, threads and engine); vLLM runs are left out when vLLM is not installed. Take
numbers on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

RUNS = ("sample-hf", "sample-hf-copies", "sample-vllm", "grpo-hf", "grpo-vllm")


def run_sampling(args, kind: str) -> dict:
    from rlvf.config import ModelConfig, SamplingConfig
    from rlvf.models.loading import encode_prompts, load_policy
    from rlvf.plugins import get_registry
    from rlvf.sampling import SamplingParams, build_sampler

    policy = load_policy(ModelConfig(name="smollm2-135m"))
    rows = get_registry().task("arithmetic").rows("train", limit=args.prompts)
    prompt_ids = encode_prompts(policy.tokenizer, [row["prompt"] for row in rows])
    begin = time.perf_counter()
    sampler = build_sampler(get_registry(), SamplingConfig(sampler=kind.removesuffix("-copies")), policy.model,
                            policy.tokenizer, path=policy.path, seed=0, batch_size=args.prompts * args.n)
    start = time.perf_counter() - begin
    sampler.sample(prompt_ids[:2], SamplingParams(temperature=1.0, max_new_tokens=8, n=2), seed=0)  # warm-up
    params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, n=args.n)
    if kind.endswith("-copies"):  # every copy a prompt of its own: prefilled n times
        prompt_ids, params.n = [ids for ids in prompt_ids for _ in range(args.n)], 1
    calls = []
    for repeat in range(args.repeats):
        begin, cpu = time.perf_counter(), time.process_time()
        samples = sampler.sample(prompt_ids, params, seed=repeat + 1)
        calls.append({"seconds": time.perf_counter() - begin, "cpu_seconds": time.process_time() - cpu,
                      "tokens": sum(map(len, samples.completion_ids))})
    syncs = [sampler.sync_weights(policy.model) for _ in range(3)] if kind == "vllm" else []
    return {"description": sampler.description, "start": start, "calls": calls,
            "sync": statistics.median(syncs) if syncs else None}


def run_grpo(args, kind: str) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from grpo_vs_trl import run_rlvf

    workload = SimpleNamespace(run="rlvf-vllm" if kind == "vllm" else "rlvf", steps=args.grpo_steps,
                               prompts=args.grpo_prompts, group=args.group,
                               max_new_tokens=args.grpo_max_new_tokens, output_dir=args.output_dir)
    return run_rlvf(workload)


def child(args) -> None:
    stage, kind = args.run.split("-", 1)
    result = run_sampling(args, kind) if stage == "sample" else run_grpo(args, kind)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print("RESULT " + json.dumps(result))


def run_child(run: str, args) -> dict:
    options = ["--prompts", args.prompts, "--n", args.n, "--max-new-tokens", args.max_new_tokens, "--repeats",
               args.repeats, "--grpo-steps", args.grpo_steps, "--grpo-prompts", args.grpo_prompts, "--group",
               args.group, "--grpo-max-new-tokens", args.grpo_max_new_tokens, "--output-dir", args.output_dir,
               "--runs", args.runs]
    command = [sys.executable, __file__, "--run", run, *map(str, options)]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        sys.exit(f"{run} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="sampling: prompts")
    parser.add_argument("--n", type=int, default=8, help="sampling: completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="sampling: at most this many new tokens")
    parser.add_argument("--repeats", type=int, default=2, help="sampling: timed calls")
    parser.add_argument("--grpo-steps", type=int, default=4, help="GRPO: steps (the first is warm-up); 0: skip")
    parser.add_argument("--grpo-prompts", type=int, default=4, help="GRPO: prompts per step")
    parser.add_argument("--group", type=int, default=8, help="GRPO: completions per prompt (G)")
    parser.add_argument("--grpo-max-new-tokens", type=int, default=32)
    parser.add_argument("--output-dir", default="/tmp/rlvf-bench-sampler")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of: {', '.join(RUNS)}")
    parser.add_argument("--run", choices=RUNS, help=argparse.SUPPRESS)  # internal: one measurement
    args = parser.parse_args()
    if args.run:
        child(args)
        return

    import shutil

    from rlvf.sampling import vllm_missing
    from rlvf.tools.table import format_table

    requested = args.runs.split(",")
    if unknown := set(requested) - set(RUNS):
        sys.exit(f"unknown runs: {', '.join(sorted(unknown))} (of: {', '.join(RUNS)})")
    if vllm_missing() and any(run.endswith("vllm") for run in requested):
        print(f"vLLM runs left out: {vllm_missing()}", file=sys.stderr)
    runs = [run for run in RUNS if run in requested and (args.grpo_steps > 0 or run.startswith("sample"))
            and not (vllm_missing() and run.endswith("vllm"))]
    shutil.rmtree(args.output_dir, ignore_errors=True)
    results = {run: run_child(run, args) for run in runs}

    rows, rates = [], {}
    for run in [run for run in runs if run.startswith("sample")]:
        result, label = results[run], run.removeprefix("sample-")
        seconds = sum(c["seconds"] for c in result["calls"])
        cpu_seconds = sum(c["cpu_seconds"] for c in result["calls"])
        tokens = sum(c["tokens"] for c in result["calls"])
        rates[label] = tokens / seconds
        description = result["description"] + (", each copy prefilled" if label.endswith("-copies") else "")
        rows.append([description, f"{result['start']:.1f}", tokens, f"{seconds:.1f}", f"{rates[label]:.1f}",
                     f"{cpu_seconds:.1f}", f"{tokens / cpu_seconds:.1f}",
                     "-" if result["sync"] is None else f"{result['sync']:.2f}", f"{result['peak_rss_gb']:.2f}"])
    if rows:
        print(f"Sampling SmolLM2-135M-Instruct (float32): {args.prompts} arithmetic prompts x {args.n}, temperature "
              f"1, max {args.max_new_tokens} new tokens, {args.repeats} timed calls after a warm-up")
        print(format_table(["sampler", "start s", "tokens", "seconds", "tok/s", "CPU s", "tok/CPU s",
                            "weight sync s", "peak RSS GB"], rows))
    for label in ("hf-copies", "vllm"):
        if label in rates and "hf" in rates:
            print(f"{label}: {rates[label] / rates['hf']:.2f}x the tokens/s of hf")

    rows, per_step = [], {}
    for kind in [run.removeprefix("grpo-") for run in runs if run.startswith("grpo")]:
        result = results[f"grpo-{kind}"]
        measured = result["steps"][1:] or result["steps"]
        per_step[kind] = statistics.median(s["seconds"] for s in measured)
        parts = " / ".join(f"{statistics.median(s[key] for s in measured):.1f}"
                           for key in ("sampling", "old_logprobs", "training", "weight_sync"))
        tokens = sum(s["tokens"] for s in measured) / sum(s["seconds"] for s in measured)
        rows.append([kind, f"{per_step[kind]:.1f}", parts, f"{tokens:.1f}", f"{result['peak_rss_gb']:.2f}"])
    if not rows:
        return
    print(f"\nGRPO: {args.grpo_prompts} prompts x G={args.group}, max {args.grpo_max_new_tokens} new tokens, "
          f"{args.grpo_steps} steps (first is warm-up), beta 0, CPU float32")
    print(format_table(["sampler", "s/step (median)", "sample / old lp / train / sync s", "generated tok/s",
                        "peak RSS GB"], rows))
    if len(per_step) == 2:
        print(f"GRPO with vLLM is {per_step['hf'] / per_step['vllm']:.2f}x faster per step than with HF")


if __name__ == "__main__":
    main()
