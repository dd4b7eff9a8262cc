"""`rlvf dpo`: direct preference optimisation on (x, y+, y-) pairs, no reward model.

With h = [log pi(y+|x) - log pi_ref(y+|x)] - [log pi(y-|x) - log pi_ref(y-|x)] (sequence log-probs):

    sigmoid (DPO):   loss = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)   (eps: label_smoothing)
    ipo (IPO):       loss = (h - 1 / (2 beta))^2

The reference log-probs are computed once, before the first update (by the policy itself, or by
`dpo.reference`), so no reference model stays in memory during training. With LoRA ([model] lora) the reference
is the policy with its adapters off (rlvf.models.lora.adapters_disabled): no second copy, even for the KL after
training. Metrics: the implicit rewards
beta [log pi(y|x) - log pi_ref(y|x)] of chosen and rejected completions, their margin, preference accuracy
(the chosen one's implicit reward is higher; a tie counts half), and after training KL(pi || pi_ref), estimated
from completions the trained policy samples on held-out prompts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from rlvf.config import Config
from rlvf.errors import ConfigError
from rlvf.models.forward import completion_logprobs
from rlvf.models.loading import encode_prompts, load_policy
from rlvf.models.lora import adapters_disabled, apply_lora, has_adapters
from rlvf.sampling import SamplingParams, model_sampler
from rlvf.stages import supervised
from rlvf.stages.pairs import load_pairs, pair_metrics, prompt_key
from rlvf.stages.rollout import Rollout


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, loss: str = "sigmoid", label_smoothing: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Per-pair losses, implicit rewards of the chosen and of the rejected completions) from sequence
    log-probs; see the module docstring for the formulas."""
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    h = chosen_ratio - rejected_ratio
    if loss == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ConfigError(f"unknown dpo.loss '{loss}'; available: sigmoid, ipo")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


@dataclass
class PairExample:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    ref_chosen: float = 0.0
    ref_rejected: float = 0.0


def encode_pair_examples(tokenizer, pairs: list[dict[str, Any]], max_length: int) -> list[PairExample]:
    out = []
    for pair in pairs:
        prompt = supervised.encode_prompt(tokenizer, pair["prompt"])
        chosen = supervised.encode_completion(tokenizer, pair["chosen"])
        rejected = supervised.encode_completion(tokenizer, pair["rejected"])
        # Both completions fit with the same (possibly shortened) prompt.
        longest = max(len(chosen), len(rejected))
        kept_prompt, _ = supervised.fit_length(prompt, [0] * longest, max_length)
        out.append(PairExample(kept_prompt, supervised.fit_length(kept_prompt, chosen, max_length)[1],
                               supervised.fit_length(kept_prompt, rejected, max_length)[1]))
    return out


def _rollout(prompt_ids: list[list[int]], completions: list[list[int]], group_ids: list[int], pad_id: int,
             device) -> Rollout:
    """Completions of prompts as the trainer's Rollout (prompt + completion right-padded, completion ids
    padded with -1); completions with the same group id share their prompt, which then runs once."""
    sequences = [p + c for p, c in zip(prompt_ids, completions, strict=True)]
    width, steps = max(map(len, sequences)), max(1, max(map(len, completions)))
    completion_ids = torch.tensor([c + [-1] * (steps - len(c)) for c in completions], device=device)
    return Rollout(
        input_ids=torch.tensor([s + [pad_id] * (width - len(s)) for s in sequences], device=device),
        attention_mask=torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences], device=device),
        completion_start=torch.tensor([len(p) for p in prompt_ids], device=device),
        completion_ids=completion_ids, mask=(completion_ids != -1).float(),
        old_logprobs=torch.zeros(completion_ids.shape, device=device), group_ids=torch.tensor(group_ids))


def pair_logprobs(model, examples: list[PairExample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-probs log pi(y+|x), log pi(y-|x) [N] under `model` (with gradient if enabled); a pair's
    prompt runs through the model once for both of its completions."""
    device = next(model.parameters()).device
    prompts = [e.prompt_ids for e in examples for _ in range(2)]
    completions = [ids for e in examples for ids in (e.chosen_ids, e.rejected_ids)]
    rollout = _rollout(prompts, completions, [i for i in range(len(examples)) for _ in range(2)], pad_id, device)
    logprobs, _ = completion_logprobs(model, rollout, temperature=1.0)
    sums = (logprobs * rollout.mask).sum(-1)
    return sums[0::2], sums[1::2]


def precompute_reference(model, examples: list[PairExample], pad_id: int, batch_size: int) -> None:
    """Store the reference's sequence log-probs in the examples, once: `model`'s, with its adapters off if it has
    LoRA adapters (the policy before training)."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), adapters_disabled(model):
        for start in range(0, len(examples), batch_size):
            chunk = examples[start: start + batch_size]
            chosen, rejected = pair_logprobs(model, chunk, pad_id)
            for example, c, r in zip(chunk, chosen.tolist(), rejected.tolist(), strict=True):
                example.ref_chosen, example.ref_rejected = c, r
    model.train(was_training)


def sampled_kl(policy, reference, tokenizer, prompts: list[Any], max_new_tokens: int, seed: int,
               batch_size: int = 16) -> dict[str, float]:
    """KL(pi || pi_ref) per sequence, estimated as the mean of log pi(y|x) - log pi_ref(y|x) over completions y
    the policy samples (temperature 1), one per prompt; also per token. `reference` may be `policy` itself: its
    adapters off (LoRA)."""
    if not prompts:
        return {}
    prompt_ids = encode_prompts(tokenizer, prompts)
    samples = model_sampler(policy, tokenizer, batch_size=batch_size).sample(
        prompt_ids, SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens, n=1), seed=seed)
    device = next(reference.parameters()).device
    total, tokens = 0.0, 0
    with torch.no_grad(), adapters_disabled(reference) if reference is policy else contextlib.nullcontext():
        for start in range(0, len(prompt_ids), batch_size):
            ids = [c or [tokenizer.eos_token_id] for c in samples.completion_ids[start: start + batch_size]]
            logprobs = samples.logprobs[start: start + batch_size]
            rollout = _rollout(prompt_ids[start: start + batch_size], ids, list(range(len(ids))),
                               tokenizer.pad_token_id, device)
            ref, _ = completion_logprobs(reference, rollout, temperature=1.0)
            for row, own in enumerate(logprobs):
                total += sum(own) - float(ref[row, : len(own)].sum())
                tokens += len(own)
    return {"kl": total / len(prompt_ids), "kl_per_token": total / max(tokens, 1)}


def run_dpo(config: Config, registry, *, resume: bool = False, force_resume: bool = False) -> dict[str, Any]:
    d = config.dpo
    supervised.check_batching(d, "dpo")
    if d.beta <= 0:
        raise ConfigError("dpo.beta must be positive")
    task_eval = supervised.task_evaluator(config, registry) if d.eval_task else None
    train_pairs = load_pairs(config.preference, "train", seed=config.seed)
    eval_pairs = load_pairs(config.preference, "eval", seed=config.seed)[: d.eval_limit]
    if not train_pairs:
        raise ConfigError(f"preference.dataset {config.preference.dataset} has no training pairs")
    run_dir = supervised.prepare_output_dir(d.output_dir, "dpo.output_dir", config, resume=resume,
                                            force_resume=force_resume)
    torch.manual_seed(config.seed)
    policy = load_policy(config.model)
    model, tokenizer, pad = policy.model, policy.tokenizer, policy.tokenizer.pad_token_id
    apply_lora(model, config.model.lora)  # [model] lora: the adapters train, and the policy without them is pi_ref
    train = encode_pair_examples(tokenizer, train_pairs, d.max_length)
    held_out = encode_pair_examples(tokenizer, eval_pairs, d.max_length)
    reference = load_policy(config.model, path=d.reference).model if d.reference else model
    # Held-out pairs in the chunks the evaluation uses: the same padding, so before training every implicit
    # reward there is exactly 0. Before train_loop: a resumed run loads its checkpoint's weights there, and its
    # reference is still the initial policy.
    for examples in (train, held_out):
        precompute_reference(reference, examples, pad, d.micro_batch_size)
    if reference is not model:
        del reference

    def pair_stats(examples):
        chosen, rejected = pair_logprobs(model, examples, pad)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            chosen, rejected, torch.tensor([e.ref_chosen for e in examples], device=chosen.device),
            torch.tensor([e.ref_rejected for e in examples], device=chosen.device), d.beta, d.loss, d.label_smoothing)
        stats = {f"rewards/{k}": v for k, v in pair_metrics(chosen_rewards, rejected_rewards).items()}
        stats |= {"logps/chosen": float(chosen.detach().sum()), "logps/rejected": float(rejected.detach().sum())}
        return losses.sum(), stats

    def evaluate():
        metrics: dict[str, float] = {}
        if held_out:
            total, sums = 0.0, {}
            for start in range(0, len(held_out), d.micro_batch_size):
                loss, stats = pair_stats(held_out[start: start + d.micro_batch_size])
                total += float(loss)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
            metrics = {"loss": total / len(held_out), **{k: v / len(held_out) for k, v in sums.items()}}
        if task_eval is not None:
            metrics |= task_eval(model, tokenizer)
        return metrics

    def kl_to_reference():
        prompts = list({prompt_key(p["prompt"]): p["prompt"] for p in eval_pairs or train_pairs}.values())
        reference = model if has_adapters(model) and not d.reference else \
            load_policy(config.model, path=d.reference).model.eval()
        return sampled_kl(model, reference, tokenizer, prompts[: d.kl_prompts], d.kl_max_new_tokens, config.seed,
                          batch_size=d.micro_batch_size)

    results = supervised.train_loop(model, train, pair_stats, evaluate, d, run_dir, config.seed, desc="dpo",
                         logged_config=config.model_dump(), finish_fn=kl_to_reference if d.kl_prompts > 0 else None,
                         resume=resume)
    if d.kl_prompts > 0 and not d.reference:
        results["before"] |= {"kl": 0.0, "kl_per_token": 0.0}  # the policy before training is the reference
    results["train_pairs"], results["eval_pairs"] = len(train), len(held_out)
    supervised.save_final(model, tokenizer, run_dir, results)
    return results
