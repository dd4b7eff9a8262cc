"""A few training steps of the real Trainer, in one process or as one rank of `torchrun` (tests/test_distributed.py).

    python tests/distributed_run.py OUT.pt key=value ...                      # one process
    torchrun --nproc_per_node 2 tests/distributed_run.py OUT.pt key=value ... train.parallel=ddp
    ... --resume                                                              # continue from the last checkpoint

The completions come from a fixed "sampler" (a function of the prompt's tokens and the sample's index), so they
are the same whatever the number of ranks, and the old log-probs are the trainer's own (exact_logprobs = False:
the trainer recomputes them). Rank 0 writes OUT.pt: the gradient of every parameter at each optimiser step (full,
after the reduction over ranks) and the logged metrics of each step.
"""

from __future__ import annotations

import json
import os
import random
import sys
import types
from pathlib import Path

import torch

from rlvf import hookimpl
from rlvf.config import load_config
from rlvf.plugins import PluginInfo, load_registry
from rlvf.sampling import Samples
from rlvf.stages.rl import Trainer


def digits(prompts, completions, **columns):
    """Fraction of the completion's characters that are digits."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


class FixedSampler:
    """Completions that depend on the prompt and the sample's index only (not on the seed, the rank or the model)."""

    name = "fixed"
    description = "fixed completions (test)"
    exact_logprobs = False

    def __init__(self, tokenizer, vocab_size: int):
        self.tokenizer, self.vocab_size = tokenizer, vocab_size

    def sample(self, prompt_ids, params, seed=None) -> Samples:
        ids, texts = [], []
        for prompt in prompt_ids:
            for j in range(params.n):
                rng = random.Random(hash(tuple(prompt)) * 31 + j)
                tokens = [rng.randrange(3, self.vocab_size) for _ in range(rng.randint(2, params.max_new_tokens - 1))]
                if rng.random() < 0.7:
                    tokens.append(self.tokenizer.eos_token_id)
                ids.append(tokens)
                texts.append(self.tokenizer.decode(tokens, skip_special_tokens=True))
        return Samples(completion_ids=ids, logprobs=[[0.0] * len(t) for t in ids], texts=texts,
                       truncated=[False] * len(ids), n=params.n)

    def sync_weights(self, model) -> float:
        return 0.0


def main() -> None:
    out, args = Path(sys.argv[1]), sys.argv[2:]
    resume = "--resume" in args
    config = load_config(None, [a for a in args if a != "--resume"])
    plugin = types.ModuleType("distributed_run_plugin")
    plugin.register_rewards = hookimpl(lambda register: register(digits))
    registry = load_registry()
    registry.add_plugin(plugin, PluginInfo("digits", "distributed-run", "0", "digits = distributed_run"))
    trainer = Trainer(config, registry, resume=resume)
    trainer.sampler = FixedSampler(trainer.tokenizer, trainer.model.config.vocab_size)
    grads: list[dict[str, torch.Tensor]] = []

    def keep_gradients(optimizer, *_):
        step = {}
        for name, parameter in trainer.model.named_parameters():
            grad = parameter.grad
            if grad is not None and hasattr(grad, "full_tensor"):  # FSDP: every rank takes part in gathering
                grad = grad.full_tensor()
            step[name] = None if grad is None else grad.detach().clone().cpu()
        grads.append(step)

    trainer.optimizer.register_step_pre_hook(keep_gradients)
    trainer.run()
    if trainer.dist.is_main:
        records = [json.loads(line) for line in (trainer.output_dir / "metrics.jsonl").read_text().splitlines()]
        metrics = [{k: v for k, v in r.items() if not k.startswith(("time/", "tokens_per_second"))}
                   for r in records if "loss" in r]
        torch.save({"grads": grads, "metrics": metrics, "world_size": int(os.environ.get("WORLD_SIZE", "1"))}, out)
    trainer.dist.close()


if __name__ == "__main__":
    main()
