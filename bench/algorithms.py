"""The algorithm presets on the demo task, same budget each: held-out accuracy, seconds/step, peak RSS.

    .venv/bin/python bench/algorithms.py [--steps 10] [--eval-limit 50] [--algorithms grpo,ppo]

Each preset trains with its config in examples/algorithms/ (the embedded SmolLM2-135M-Instruct on arithmetic,
`math` + `boxed` rewards, 8 prompts x G=8, at most 32 new tokens, lr 1e-5) for `--steps` steps; then its
accuracy on `--eval-limit` held-out problems (greedy) is measured. `base` is the untrained model. Each run is
its own subprocess, so its peak RSS is its own: the policy and its optimizer state, plus a reference model
where the preset has beta > 0 and a critic (a second model, its gradients and optimizer) for ppo. The first
step is warm-up and left out of s/step. The examples' step count is 20: `--steps 20` is their full budget.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ALGORITHMS = ("grpo", "dr_grpo", "dapo", "rloo", "reinforce_pp", "ppo")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "algorithms"


def child(args) -> None:
    from rlvf.config import load_config
    from rlvf.plugins import get_registry
    from rlvf.stages.rl import Trainer

    name = "grpo" if args.run == "base" else args.run
    overrides = {
        "train.steps": args.steps, "train.save_every": 0, "train.eval_before": False, "train.report_to": ["jsonl"],
        "train.progress": False, "train.output_dir": f"{args.output_dir}/{args.run}", "eval.limit": args.eval_limit,
        **({"train.prompts_per_step": args.prompts} if args.prompts else {}),
        **({"sampling.sampler": args.sampler} if args.sampler else {}),
    }
    config = load_config(EXAMPLES / f"{name}.toml", [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    trainer = Trainer(config, get_registry())
    steps = []
    while args.run != "base" and trainer.step < args.steps:
        metrics = trainer.train_step()
        trainer.step += 1
        steps.append({"seconds": metrics["time/step"], "reward": metrics.get("reward/mean", 0.0)})
    result = {"steps": steps, "eval": trainer.evaluate(), "beta": config.algorithm.beta,
              "advantage": config.algorithm.advantage, "critic": trainer.critic is not None}
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="training steps of every algorithm")
    parser.add_argument("--eval-limit", type=int, default=50, help="held-out problems evaluated")
    parser.add_argument("--prompts", type=int, help="prompts per step (default: the examples' 8)")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated presets")
    parser.add_argument("--sampler", help="sampling.sampler (default: the config's)")
    parser.add_argument("--no-base", action="store_true", help="skip evaluating the untrained model")
    parser.add_argument("--output-dir", default="/tmp/rlvf-bench-algorithms")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one algorithm in this process
    args = parser.parse_args()
    if args.run:
        child(args)
        return

    import shutil

    from rlvf.tools.table import format_table

    names = [n.strip() for n in args.algorithms.split(",") if n.strip()]
    unknown = [n for n in names if not (EXAMPLES / f"{n}.toml").is_file()]
    if unknown:
        sys.exit(f"no example config for {', '.join(unknown)} in {EXAMPLES}")
    shutil.rmtree(args.output_dir, ignore_errors=True)
    rows = []
    for name in ([] if args.no_base else ["base"]) + names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--run", name, *sys.argv[1:]]
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or not lines:
            sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
        result = json.loads(lines[-1][len("RESULT "):])
        measured = result["steps"][1:] or result["steps"]  # the first step is warm-up
        seconds = f"{statistics.median(s['seconds'] for s in measured):.1f}" if measured else "-"
        last = result["steps"][-3:]
        reward = f"{sum(s['reward'] for s in last) / len(last):.3f}" if last else "-"
        rows.append([name, "-" if name == "base" else result["advantage"],
                     "-" if name == "base" else ("yes" if result["critic"] else "no"),
                     "-" if name == "base" else f"{result['beta']:g}", f"{result['eval']['accuracy']:.3f}", reward,
                     seconds, f"{result['peak_rss_gb']:.2f}"])
    prompts = args.prompts or 8
    print(f"arithmetic, SmolLM2-135M-Instruct, {args.steps} steps x {prompts} prompts x G=8 (examples/algorithms/), "
          f"held-out accuracy on {args.eval_limit} problems (greedy)")
    print(format_table(["algorithm", "advantage", "critic", "beta", "held-out accuracy", "reward (last 3 steps)",
                        "s/step (median)", "peak RSS GB"], rows))


if __name__ == "__main__":
    main()
