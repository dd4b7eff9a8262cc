"""GRPO seconds/step, tokens/s, training GFLOP/s against this machine's matmul GFLOP/s, and peak RSS: rlvf against
TRL's GRPOTrainer on the same workload, with full and LoRA updates.

    .venv/bin/python bench/grpo_vs_trl.py [--steps 4] [--prompts 4] [--group 8] [--max-new-tokens 32]
                                          [--runs trl,rlvf,rlvf-vllm,trl-lora,rlvf-lora]

All train the embedded SmolLM2-135M-Instruct on the `arithmetic` task's prompts with the same reward
function (the installed `math` reward plus `boxed`), G completions per prompt at temperature 1, loss
aggregated per token (TRL "dapo" = rlvf "token_mean"), one optimisation pass, no reference model (beta = 0,
TRL's default), no gradient checkpointing, float32 on the CPU. TRL samples with HF transformers' generate;
`rlvf` with its own HF decode loop, `rlvf-vllm` with a vLLM engine in the trainer's process (weights synced
after each optimiser step, old log-probs recomputed by the trainer; left out if vLLM is not installed).
The `-lora` runs train LoRA adapters (r = 16, alpha = 32, every linear layer of the decoder) instead of every
weight: rlvf through `[model] lora`, TRL through `peft_config=peft.LoraConfig(...)`. The learning rate is the
same everywhere (this measures speed, not learning).

Each run is its own subprocess (so peak RSS is its own); the first step is warm-up and left out of the
per-step numbers. Before and after the runs, the bench measures fp32 matmul GFLOP/s with the threads the runs use
(torch's default, i.e. OMP_NUM_THREADS if set): the roofline the training GFLOP/s are a fraction of.

Training GFLOP/s = training FLOPs / training seconds, with FLOPs per token = 2 P (forward) + 2 P (backward to the
activations) + 2 P_trained (backward to the weights): 6 P for a full update, about 4 P for LoRA (a frozen weight
needs no gradient). "compl." counts the completion tokens of the step's update (the same work for every
framework: useful throughput); "+prompt" adds the prompt tokens the update runs forward and backward as well, as
each framework runs them (TRL each sequence's prompt, rlvf each group's once, shared by its G completions): the
FLOP/s executed, how close to the matmul roofline the update runs. Training seconds are rlvf's `time/training`
(advantages and the update); for TRL, a step less its `_generate_and_score_completions`.

TRL is not a dependency of rlvf: it lives in its own venv, `.venv-bench` (shared with bench/math_verify_bench.py),
created on first use and layered over the project's venv by a .pth file, so that TRL runs on the very torch,
transformers and peft rlvf runs on (and imports rlvf's rewards) while `pip install trl==1.16.0` and whatever TRL
pulls in go into `.venv-bench` only.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENV = ROOT / ".venv-bench"
TRL_VERSION = "1.16.0"
RUNS = ("trl", "rlvf", "rlvf-vllm", "trl-lora", "rlvf-lora")
REWARDS = {"math": 1.0, "boxed": 0.1}
LORA = {"r": 16, "alpha": 32}  # rlvf's [model] lora; TRL gets the same as peft.LoraConfig
# (name, m, k, n): the decoder's MLP (a 32 x 37-token batch through SmolLM2's 576 -> 1536), a square one, and the
# LM head over the vocabulary
MATMUL_SHAPES = (("MLP 1200x576 . 576x1536", 1200, 576, 1536), ("square 2048^3", 2048, 2048, 2048),
                 ("LM head 960x576 . 576x49152", 960, 576, 49152))


def workload(args) -> tuple[list[dict], str]:
    from rlvf.models.names import resolve_model
    from rlvf.plugins import get_registry

    task = get_registry().task("arithmetic")
    rows = task.rows("train", limit=args.prompts * args.steps)
    return rows, resolve_model("smollm2-135m")


def parameter_counts(model) -> dict[str, int]:
    return {"params": sum(p.numel() for p in model.parameters()),
            "trained_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def rlvf_steps(trainer, steps: int) -> list[dict]:
    """Train an rlvf Trainer up to `steps` steps; per step: its seconds and those of its phases, the completion
    tokens, and the prompt tokens the update runs (each prompt once for its group: rlvf.models.forward)."""
    from rlvf.models.loading import encode_prompts

    records = []
    while trainer.step < steps:
        rows = trainer.prompts_for_step(trainer.step)
        share = len(rows) // trainer.dist.world_size  # this rank's prompts, as train_step takes them
        rows = rows[trainer.dist.rank * share: (trainer.dist.rank + 1) * share]
        prompts = encode_prompts(trainer.tokenizer, [row["prompt"] for row in rows])
        metrics = trainer.train_step()
        trainer.step += 1
        records.append({"seconds": metrics["time/step"], "tokens": metrics["tokens/generated"],
                        "prompt_tokens": sum(map(len, prompts)),
                        "sampling": metrics["time/sampling"], "training": metrics["time/training"],
                        "old_logprobs": metrics.get("time/old_logprobs", 0.0),
                        "weight_sync": metrics.get("time/weight_sync", 0.0)})
    return records


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
        **({"model.lora": LORA} if args.run.endswith("-lora") else {}),
    }
    config = load_config(None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    trainer = Trainer(config, get_registry())
    return {"steps": rlvf_steps(trainer, args.steps), **parameter_counts(trainer.model)}


def trl_steps(model, tokenizer, rows: list[dict], reward_funcs: list, reward_weights: list[float], *, steps: int,
              prompts: int, group: int, max_new_tokens: int, output_dir: str, lora: bool, cpu: bool
              ) -> tuple[list[dict], dict[str, int]]:
    """TRL's GRPOTrainer for `steps` steps on `rows` (with `prompt` and the reward columns), settings as rlvf's
    runs; per step: its seconds, the seconds of generating and scoring, completion and prompt tokens; and the
    model's parameter counts."""
    import datasets
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    batch = prompts * group
    config = GRPOConfig(
        output_dir=output_dir, max_steps=steps, per_device_train_batch_size=batch,
        num_generations=group, generation_batch_size=batch, max_completion_length=max_new_tokens,
        num_iterations=1, beta=0.0, temperature=1.0, top_p=1.0, loss_type="dapo", learning_rate=1e-6,
        reward_weights=reward_weights, gradient_checkpointing=False, use_cpu=cpu,
        bf16=not cpu and model.dtype == torch.bfloat16, logging_steps=1, report_to=[], save_strategy="no", seed=0,
        shuffle_dataset=False, dataloader_num_workers=0, disable_tqdm=True,
    )
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], target_modules="all-linear",
                                 task_type="CAUSAL_LM")

    class StepTimer(TrainerCallback):
        """Per optimiser step: its seconds, the seconds of generating and scoring, and the tokens it trained on."""

        def __init__(self):
            self.steps, self.begin, self.sampling, self.tokens_seen = [], None, 0.0, 0

        def on_step_begin(self, _args, state, *_, **__):
            self.begin, self.sampling, self.tokens_seen = time.perf_counter(), 0.0, state.num_input_tokens_seen

        def on_step_end(self, _args, state, *_, **__):
            seconds = time.perf_counter() - self.begin
            self.steps.append({"seconds": seconds, "sampling": self.sampling, "training": seconds - self.sampling,
                               "all_tokens": state.num_input_tokens_seen - self.tokens_seen})

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "completions/mean_length" in logs and self.steps:
                step = self.steps[-1]
                step["tokens"] = logs["completions/mean_length"] * batch
                step["prompt_tokens"] = step.pop("all_tokens") - step["tokens"]

    timer = StepTimer()
    dataset = datasets.Dataset.from_list(rows)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[timer], peft_config=peft_config)
    generate_and_score = trainer._generate_and_score_completions

    def timed_generate_and_score(*call_args, **kwargs):
        start = time.perf_counter()
        try:
            return generate_and_score(*call_args, **kwargs)
        finally:
            timer.sampling += time.perf_counter() - start

    trainer._generate_and_score_completions = timed_generate_and_score
    trainer.train()
    return timer.steps, parameter_counts(trainer.model)


def run_trl(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvf.plugins import get_registry

    rows, model_dir = workload(args)
    registry = get_registry()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    steps, counts = trl_steps(model, tokenizer, [{"prompt": r["prompt"], "answer": r["answer"]} for r in rows],
                              [registry.reward(name).build() for name in REWARDS], list(REWARDS.values()),
                              steps=args.steps, prompts=args.prompts, group=args.group,
                              max_new_tokens=args.max_new_tokens, output_dir=f"{args.output_dir}/{args.run}",
                              lora=args.run.endswith("-lora"), cpu=True)
    return {"steps": steps, **counts}


def child(args) -> None:
    result = run_trl(args) if args.run.startswith("trl") else run_rlvf(args)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print("RESULT " + json.dumps(result))


def measure_matmul(seconds: float = 1.0) -> tuple[int, dict[str, float]]:
    """(threads, fp32 GFLOP/s of torch.matmul at each of MATMUL_SHAPES: the median of repeated calls over about
    `seconds` after a warm-up)."""
    import torch

    rates = {}
    for name, m, k, n in MATMUL_SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        out = torch.empty(m, n)
        torch.matmul(a, b, out=out)
        times, deadline = [], time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 3:
            start = time.perf_counter()
            torch.matmul(a, b, out=out)
            times.append(time.perf_counter() - start)
        rates[name] = 2 * m * k * n / statistics.median(times) / 1e9
    return torch.get_num_threads(), rates


def trl_python() -> str:
    """The `.venv-bench` python with trl==TRL_VERSION, which sees this venv's packages behind its own."""
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {BENCH_VENV} for TRL (once)...", file=sys.stderr)
        venv.create(BENCH_VENV, with_pip=True)
    probe = "import sys, sysconfig; print(sys.version_info[:2] == tuple(map(int, sys.argv[1].split('.'))), " \
            "sysconfig.get_paths()['purelib'])"
    same_python, bench_site = subprocess.run(
        [str(python), "-c", probe, f"{sys.version_info[0]}.{sys.version_info[1]}"],
        capture_output=True, text=True, check=True).stdout.split()
    if same_python != "True":
        sys.exit(f"{BENCH_VENV} was made with another Python than {sys.executable}: remove it and run again")
    project_site = sysconfig.get_paths()["purelib"]
    # addsitedir, not a plain path line: it also runs the project's .pth files (rlvf's editable installs)
    (Path(bench_site) / "zz_rlvf_project.pth").write_text(f"import site; site.addsitedir({project_site!r})\n")
    version = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('trl'))"],
                             capture_output=True, text=True).stdout.strip()
    if version != TRL_VERSION:
        print(f"installing trl=={TRL_VERSION} into {BENCH_VENV}...", file=sys.stderr)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        f"trl=={TRL_VERSION}"], check=True)
    return str(python)


def flops_per_token(result: dict) -> float:
    """2 P forward + 2 P backward to the activations + 2 P_trained backward to the weights (6 P when all train)."""
    return 4 * result["params"] + 2 * result["trained_params"]


def params_cell(result: dict) -> str:
    """'all (trained)' parameters in millions."""
    def millions(count: int) -> str:
        return f"{count / 1e6:.0f}" if count >= 1e8 else f"{count / 1e6:.3g}"

    return f"{millions(result['params'])} ({millions(result['trained_params'])})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--output-dir", default="/tmp/rlvf-bench-grpo")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of: {', '.join(RUNS)}")
    parser.add_argument("--run", choices=RUNS, help=argparse.SUPPRESS)  # internal: one run
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
    python = trl_python() if any(run.startswith("trl") for run in runs) else sys.executable
    threads, matmul = measure_matmul()
    results = {run: run_child(run, args, python if run.startswith("trl") else sys.executable) for run in runs}
    # measured again after the runs: on a machine that is not quiet, the better of the two is nearer the truth
    matmul = {name: max(rate, again) for (name, rate), again in zip(matmul.items(), measure_matmul()[1].values(),
                                                                     strict=True)}
    roofline = max(matmul.values())
    rows, per_step = [], {}
    for run, result in results.items():
        measured = result["steps"][1:] or result["steps"]  # the first step is warm-up
        per_step[run] = seconds = statistics.median(s["seconds"] for s in measured)
        tokens = sum(s.get("tokens", 0) for s in measured) / sum(s["seconds"] for s in measured)
        parts = " / ".join(f"{statistics.median(s.get(key, 0.0) for s in measured):.1f}"
                           for key in ("sampling", "old_logprobs", "training", "weight_sync"))
        training = sum(s["training"] for s in measured)
        completion = flops_per_token(result) * sum(s.get("tokens", 0) for s in measured) / training / 1e9
        with_prompt = completion + (flops_per_token(result) * sum(s.get("prompt_tokens", 0) for s in measured)
                                    / training / 1e9)
        rows.append([run, params_cell(result), f"{seconds:.1f}", parts, f"{tokens:.1f}",
                     f"{completion:.1f} / {with_prompt:.1f}",
                     f"{completion / roofline:.0%} / {with_prompt / roofline:.0%}", f"{result['peak_rss_gb']:.2f}"])
    print(f"fp32 matmul, {threads} threads (the better of before and after the runs): "
          + ", ".join(f"{name} {rate:.0f}" for name, rate in matmul.items())
          + f" GFLOP/s; the best, {roofline:.0f}, is the 100% below")
    print(f"GRPO on SmolLM2-135M-Instruct, arithmetic, {args.prompts} prompts x G={args.group}, "
          f"max {args.max_new_tokens} new tokens, {args.steps} steps (first is warm-up), CPU float32, "
          f"LoRA r={LORA['r']} alpha={LORA['alpha']}")
    print(format_table(["run", "params M (trained)", "s/step (median)", "sample / old lp / train / sync s",
                        "generated tok/s", "train GFLOP/s compl. / +prompt", "% of matmul", "peak RSS GB"], rows))
    print("(TRL: sample = generation and scoring, train = the rest of its step; rlvf's sample leaves scoring out)")
    comparisons = [("rlvf", "trl"), ("rlvf-vllm", "trl"), ("rlvf-lora", "trl-lora"),
                   ("rlvf-lora", "rlvf"), ("trl-lora", "trl")]
    for faster, baseline in comparisons:
        if faster in per_step and baseline in per_step:
            print(f"{faster}: {per_step[baseline] / per_step[faster]:.2f}x the steps/s of {baseline}"
                  + (f" (TRL {TRL_VERSION})" if baseline.startswith("trl") and not faster.startswith("trl") else ""))


def run_child(run: str, args, python: str) -> dict:
    """One run in its own subprocess (its own peak RSS, threads and engine); its RESULT line, parsed."""
    command = [python, __file__, "--run", run, "--steps", str(args.steps), "--prompts", str(args.prompts),
               "--group", str(args.group), "--max-new-tokens", str(args.max_new_tokens),
               "--output-dir", args.output_dir]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        sys.exit(f"{run} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


if __name__ == "__main__":
    main()
