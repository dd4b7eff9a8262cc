"""Seconds per AdamW step (and per gradient-norm clip) over the embedded SmolLM2-135M-Instruct's parameters, full
and LoRA, with each of torch's implementations: the Python loop over tensors (torch's default on a CPU), foreach,
and fused (what rlvf.engine.optim picks where the parameters allow it).

    .venv/bin/python bench/optimizer_step.py [--repeats 5]

Gradients are random (their values do not change the cost). The median of `--repeats` steps after one warm-up
step; threads: torch's default (OMP_NUM_THREADS if set). Take numbers on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch


def seconds(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from rlvf.config import LoraConfig, ModelConfig
    from rlvf.models.loading import load_policy
    from rlvf.models.lora import apply_lora

    print(f"threads: {torch.get_num_threads()}")
    print("| parameters | count M | loop s | foreach s | fused s | clip_grad_norm_ s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, lora in (("full", None), ("LoRA r=16", LoraConfig(r=16, alpha=32))):
        model = apply_lora(load_policy(ModelConfig(name="smollm2-135m")).model, lora)
        parameters = [p for p in model.parameters() if p.requires_grad]
        for p in parameters:
            p.grad = torch.randn_like(p) * 1e-3
        row = []
        for options in ({"foreach": False}, {"foreach": True}, {"fused": True}):
            optimizer = torch.optim.AdamW(parameters, lr=1e-6, **options)
            row.append(seconds(optimizer.step, args.repeats))
            del optimizer
        clip = seconds(functools.partial(torch.nn.utils.clip_grad_norm_, parameters, 1.0), args.repeats)
        count = sum(p.numel() for p in parameters) / 1e6
        print(f"| {label} | {count:.2f} | " + " | ".join(f"{value:.3f}" for value in row) + f" | {clip:.3f} |")


if __name__ == "__main__":
    main()
