"""GRPO seconds/step, tokens/s and peak RSS: rlvf against TRL's GRPOTrainer on the same workload.

    .venv/bin/python bench/grpo_vs_trl.py [--steps 4] [--prompts 4] [--group 8] [--max-new-tokens 32]
                                          [--runs trl,rlvf,rlvf-vllm]

All train the embedded SmolLM2-135M-Instruct on the `arithmetic` task's prompts with the same reward
function (the installed `math` reward plus `boxed`), G completions per prompt at temperature 1, loss
aggregated per token (TRL "dapo" = rlvf "token_mean"), one optimisation pass, no reference model (beta = 0,
TRL's default), no gradient checkpointing, float32 on the CPU. TRL samples with HF transformers' generate;
`rlvf` with its own HF decode loop, `rlvf-vllm` with a vLLM engine in the trainer's process (weights synced
after each optimiser step, old log-probs recomputed by the trainer; left out if vLLM is not installed).
Each run is its own subprocess (so peak RSS is its own); the first step is warm-up and left out of the
per-step numbers. TRL is installed on demand (`pip install trl==1.16.0`): it is not a dependency of rlvf.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

TRL_VERSION = "1.16.0"
RUNS = ("trl", "rlvf", "rlvf-vllm")
REWARDS = {"math": 1.0, "boxed": 0.1}


def workload(args) -> tuple[list[dict], str]:
    from rlvf.models.names import resolve_model
    from rlvf.plugins import get_registry

    task = get_registry().task("arithmetic")
    rows = task.rows("train", limit=args.prompts * args.steps)
    return rows, resolve_model("smollm2-135m")


def run_rlvf(args) -> dict:
    from rlvf.config import load_config
    from rlvf.plugins import get_registry
    from rlvf.stages.rl import Trainer

    overrides = {
        "sampling.sampler": "vllm" if args.run == "rlvf-vllm" else "hf",
        "seed": 0, "train.steps": args.steps, "train.prompts_per_step": args.prompts, "train.group_size": args.group,
        "train.micro_batch_size": args.prompts * args.group, "train.lr": 1e-6, "train.save_every": 0,
        "train.eval_before": False, "train.report_to": ["jsonl"], "train.progress": False,
        "train.output_dir": f"{args.output_dir}/{args.run}", "sampling.max_new_tokens": args.max_new_tokens,
        "sampling.batch_size": args.prompts * args.group, "algorithm.beta": 0.0,
        "algorithm.loss_aggregation": "token_mean", "eval.limit": 1,
        **{f"reward.mix.{name}": weight for name, weight in REWARDS.items()},
    }
    config = load_config(None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    trainer = Trainer(config, get_registry())
    steps = []
    while trainer.step < args.steps:
        metrics = trainer.train_step()
        trainer.step += 1
        steps.append({"seconds": metrics["time/step"], "tokens": metrics["tokens/generated"],
                      "sampling": metrics["time/sampling"], "training": metrics["time/training"],
                      "old_logprobs": metrics.get("time/old_logprobs", 0.0),
                      "weight_sync": metrics.get("time/weight_sync", 0.0)})
    return {"steps": steps}


def run_trl(args) -> dict:
    import importlib.metadata

    try:
        installed = importlib.metadata.version("trl")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed != TRL_VERSION:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"trl=={TRL_VERSION}"], check=True)
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlvf.plugins import get_registry

    rows, model_dir = workload(args)
    registry = get_registry()
    reward_funcs = [registry.reward(name).build() for name in REWARDS]
    dataset = datasets.Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])
    batch = args.prompts * args.group
    config = GRPOConfig(
        output_dir=args.output_dir + "/trl", max_steps=args.steps, per_device_train_batch_size=batch,
        num_generations=args.group, generation_batch_size=batch, max_completion_length=args.max_new_tokens,
        num_iterations=1, beta=0.0, temperature=1.0, top_p=1.0, loss_type="dapo", learning_rate=1e-6,
        reward_weights=list(REWARDS.values()), gradient_checkpointing=False, use_cpu=True, bf16=False,
        logging_steps=1, report_to=[], save_strategy="no", seed=0, shuffle_dataset=False,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.steps, self.begin = [], None

        def on_step_begin(self, *_, **__):
            self.begin = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.steps.append({"seconds": time.perf_counter() - self.begin})

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "completions/mean_length" in logs and self.steps:
                self.steps[-1]["tokens"] = logs["completions/mean_length"] * batch

    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[timer])
    trainer.train()
    return {"steps": timer.steps}


def child(args) -> None:
    result = run_trl(args) if args.run == "trl" else run_rlvf(args)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--output-dir", default="/tmp/rlvf-bench-grpo")
    parser.add_argument("--runs", default="trl,rlvf,rlvf-vllm", help="comma-separated: trl, rlvf, rlvf-vllm")
    parser.add_argument("--run", choices=RUNS, help=argparse.SUPPRESS)  # internal: one framework
    args = parser.parse_args()
    if args.run:
        child(args)
        return

    import shutil

    from rlvf.sampling import vllm_missing
    from rlvf.tools.table import format_table

    shutil.rmtree(args.output_dir, ignore_errors=True)
    runs = [run for run in args.runs.split(",") if run]
    if unknown := set(runs) - set(RUNS):
        sys.exit(f"unknown runs {sorted(unknown)}; choose from {', '.join(RUNS)}")
    if "rlvf-vllm" in runs and vllm_missing():
        print(f"rlvf-vllm left out: {vllm_missing()}", file=sys.stderr)
        runs.remove("rlvf-vllm")
    results = {run: run_child(run, args) for run in runs}
    rows, per_step = [], {}
    for framework, result in results.items():
        measured = result["steps"][1:] or result["steps"]  # the first step is warm-up
        per_step[framework] = seconds = statistics.median(s["seconds"] for s in measured)
        tokens = sum(s.get("tokens", 0) for s in measured) / sum(s["seconds"] for s in measured)
        parts = "-"
        if "sampling" in measured[0]:  # rlvf: where the time of a step goes (medians)
            parts = " / ".join(f"{statistics.median(s[key] for s in measured):.1f}"
                               for key in ("sampling", "old_logprobs", "training", "weight_sync"))
        rows.append([framework, f"{seconds:.1f}", parts, f"{tokens:.1f}", f"{result['peak_rss_gb']:.2f}"])
    print(f"GRPO on SmolLM2-135M-Instruct, arithmetic, {args.prompts} prompts x G={args.group}, "
          f"max {args.max_new_tokens} new tokens, {args.steps} steps (first is warm-up), CPU float32")
    print(format_table(["run", "s/step (median)", "sample / old lp / train / sync s", "generated tok/s",
                        "peak RSS GB"], rows))
    for framework in per_step:
        if framework != "trl" and "trl" in per_step:
            print(f"{framework} is {per_step['trl'] / per_step[framework]:.2f}x faster per step than TRL {TRL_VERSION}")


def run_child(run: str, args) -> dict:
    """One run in its own subprocess (its own peak RSS, threads and engine); its RESULT line, parsed."""
    command = [sys.executable, __file__, "--run", run, "--steps", str(args.steps), "--prompts", str(args.prompts),
               "--group", str(args.group), "--max-new-tokens", str(args.max_new_tokens),
               "--output-dir", args.output_dir]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        sys.exit(f"{run} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


if __name__ == "__main__":
    main()
