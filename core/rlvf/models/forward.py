"""The trainer's forward pass over a rollout's completions: log-probs (and entropy) of the completion tokens, and
values of a critic's head on the same hidden states. Each prompt runs through the decoder once for all its
completions (completion_hidden_states), and the LM head only on the states that predict completion tokens, chunk by
chunk over the positions (token_logprobs: no [positions, V] float32 tensor is kept for backward).

PolicyForward and ValueForward are these passes as module calls: the modules DDP or FSDP wrap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from rlvf.models.attention import grouped_attention
from rlvf.models.loading import left_padded

if TYPE_CHECKING:  # no import at run time: models/ does not depend on stages/
    from rlvf.models.critic import Critic
    from rlvf.stages.rollout import Rollout


def completion_hidden_states(decoder, rollout: Rollout) -> torch.Tensor:
    """The decoder's hidden states [B, T, H] that predict the rollout's completion tokens, i.e. position t holds the
    state before completion token t.

    The G completions of a prompt share it, so each prompt runs through the decoder once and its KV cache is
    repeated for its completions: with few-shot prompts, most tokens of a batch are prompt tokens. Two decoder calls
    in all, whatever the number of prompts: the distinct prompts (left-padded to the longest), then every completion
    (padded to the longest) on its prompt's cache. One call per prompt instead ran each weight's matmuls on a few
    hundred rows and summed a gradient per call: 1.3x slower on a CPU (SmolLM2, 4 prompts x 8). Every token the
    pass reads is embedded in one lookup, whose backward is one dense [V, H] gradient. Positions past a completion's
    end hold states of padding, which nothing reads.
    """
    device = rollout.input_ids.device
    steps = rollout.completion_ids.shape[1]
    real = rollout.completion_ids != -1
    groups, copies = torch.unique(rollout.group_ids, return_inverse=True)  # each row's prompt (group_ids: on the CPU)
    rows = torch.arange(len(copies))
    first_rows = rows.new_full((len(groups),), len(copies)).scatter_reduce(0, copies, rows, "amin").tolist()
    prompts, prompt_mask = left_padded([rollout.input_ids[row, : rollout.completion_start[row]].tolist()
                                        for row in first_rows], pad_id=0, device=device)
    copies = copies.to(device)
    body = max(1, int(real.sum(1).max())) - 1  # the completions' width, less the token nothing follows
    tokens = rollout.completion_ids[:, :body].clamp(min=0)
    embedded = decoder.get_input_embeddings()(torch.cat([prompts.flatten(), tokens.flatten()]))
    embedded_prompts, embedded_tokens = embedded.split([prompts.numel(), tokens.numel()])
    with grouped_attention(decoder):
        prefix = decoder(inputs_embeds=embedded_prompts.view(*prompts.shape, -1), attention_mask=prompt_mask,
                         position_ids=(prompt_mask.cumsum(1) - 1).clamp(min=0), use_cache=True)
        hidden = prefix.last_hidden_state[:, -1:].index_select(0, copies)  # predicts each row's first token
        if body:
            cache = prefix.past_key_values
            cache.batch_select_indices(copies)
            attention = torch.cat([prompt_mask.index_select(0, copies), real[:, :body].long()], dim=1)
            positions = rollout.completion_start[:, None] + torch.arange(body, device=device)
            states = decoder(inputs_embeds=embedded_tokens.view(*tokens.shape, -1), attention_mask=attention,
                             position_ids=positions, past_key_values=cache).last_hidden_state
            hidden = torch.cat([hidden, states], dim=1)
    return torch.nn.functional.pad(hidden, (0, 0, 0, steps - hidden.shape[1]))


# Positions per chunk of the LM head: a chunk's float32 logits are CHUNK x V (50 MB for SmolLM2's 49k vocabulary).
# 128, 256 and 512 train equally fast on a CPU (bench: the update of 32 x 32 tokens); the chunk's buffers scale with it.
CHUNK = 256


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float,
                  buffer: torch.Tensor) -> torch.Tensor:
    """head(hidden).float() / temperature for a chunk of positions, in `buffer` when the head is float32 without
    bias (a new tensor otherwise)."""
    if weight.dtype == torch.float32 and bias is None:
        logits = torch.mm(hidden, weight.t(), out=buffer[: len(hidden)])
    else:
        logits = torch.nn.functional.linear(hidden, weight, bias).float()
    return logits.div_(temperature) if temperature != 1 else logits


class _TokenLogProbs(torch.autograd.Function):
    """log softmax(head(hidden) / T)[token] per position (and the entropy of that distribution, without gradient),
    computed over chunks of positions: only the logsumexp of each position is kept for backward, which computes the
    chunk's logits again. No [positions, V] float32 tensor lives beyond one chunk, in forward or in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens, temperature: float, with_entropy: bool):
        logprobs = hidden.new_empty(len(hidden), dtype=torch.float32)
        logsumexp = torch.empty_like(logprobs)
        entropy = torch.empty_like(logprobs) if with_entropy else None
        # two chunk-sized buffers, written in place: a fresh 25 MB tensor per operation costs more in page faults
        # than the operation itself
        buffer, exps = (hidden.new_empty(min(CHUNK, len(hidden)), weight.shape[0], dtype=torch.float32)
                        for _ in range(2))
        for start in range(0, len(hidden), CHUNK):
            part = slice(start, start + CHUNK)
            logits = _chunk_logits(hidden[part], weight, bias, temperature, buffer)
            peak = logits.amax(-1, keepdim=True)
            shifted = logits.sub_(peak)
            exp = torch.exp(shifted, out=exps[: len(shifted)])
            sums = exp.sum(-1, keepdim=True)
            log_sums = sums.log()
            logsumexp[part] = (peak + log_sums).squeeze(1)
            log_probs = shifted.sub_(log_sums)  # the chunk's log-softmax, in place
            logprobs[part] = log_probs.gather(1, tokens[part, None]).squeeze(1)
            if with_entropy:  # -sum p log p with p = exp / sums
                entropy[part] = -exp.mul_(log_probs).sum(-1) / sums.squeeze(1)
        ctx.save_for_backward(hidden, weight, bias, tokens, logsumexp)
        ctx.temperature = temperature
        if with_entropy:
            ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        hidden, weight, bias, tokens, logsumexp = ctx.saved_tensors
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_weight = grad_bias = None  # accumulated in float32: bf16 sums of chunks would lose what one matmul keeps
        buffer = hidden.new_empty(min(CHUNK, len(hidden)), weight.shape[0], dtype=torch.float32)
        for start in range(0, len(hidden), CHUNK):
            part = slice(start, start + CHUNK)
            grad = grad_logprobs[part, None] / ctx.temperature
            # d log p[token] / d (head(hidden)) = (onehot(token) - softmax) / T
            grad_logits = _chunk_logits(hidden[part], weight, bias, ctx.temperature, buffer)
            grad_logits = grad_logits.sub_(logsumexp[part, None]).exp_().mul_(-grad)
            grad_logits = grad_logits.scatter_add_(1, tokens[part, None], grad).to(weight.dtype)
            if needs_hidden:
                grad_hidden[part] = grad_logits @ weight
            if needs_weight:
                if grad_weight is None:
                    grad_weight = (grad_logits.t() @ hidden[part]).float()
                elif grad_weight.dtype == weight.dtype:
                    grad_weight.addmm_(grad_logits.t(), hidden[part])
                else:
                    grad_weight += (grad_logits.t() @ hidden[part]).float()
            if needs_bias:
                chunk_sum = grad_logits.float().sum(0)
                grad_bias = chunk_sum if grad_bias is None else grad_bias + chunk_sum
        return (grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype),
                None if grad_bias is None else grad_bias.to(bias.dtype), None, None, None)


def token_logprobs(head, hidden: torch.Tensor, tokens: torch.Tensor, temperature: float,
                   with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log-probs [N] of `tokens` [N] under softmax(head(hidden [N, H]) / temperature), and its entropy without
    gradient if asked), chunk by chunk for a linear head (_TokenLogProbs); the plain formula for another head."""
    temperature = max(temperature, 1e-6)
    if isinstance(head, torch.nn.Linear):
        return _TokenLogProbs.apply(hidden, head.weight, head.bias, tokens, temperature, with_entropy)
    log_probs = torch.log_softmax(head(hidden).float() / temperature, dim=-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(log_probs.exp() * log_probs).sum(-1)
    return log_probs.gather(-1, tokens[:, None]).squeeze(-1), entropy


def completion_forward(model, rollout: Rollout, temperature: float, with_entropy: bool = False,
                       value_head=None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(log-probs [B, T] of the completion tokens under `model` at the sampling temperature, 0 on padding; the
    per-token entropy of the policy without gradient if asked; and `value_head` applied to the same hidden states
    if given: a critic sharing the policy's backbone). The LM head (49k x 576 for SmolLM2) runs only on the hidden
    states that predict completion tokens, all of the rollout's in one call (token_logprobs)."""
    hidden = completion_hidden_states(model.get_decoder(), rollout)
    real = (rollout.completion_ids != -1).flatten().nonzero().squeeze(1)
    logprobs, entropy = token_logprobs(model.get_output_embeddings(), hidden.flatten(0, 1)[real],
                                       rollout.completion_ids.flatten()[real], temperature, with_entropy)

    def on_positions(values: torch.Tensor) -> torch.Tensor:  # [B, T], 0 on padding
        return values.new_zeros(rollout.completion_ids.numel()).index_copy(0, real, values).view_as(
            rollout.completion_ids)

    return (on_positions(logprobs), None if entropy is None else on_positions(entropy),
            None if value_head is None else value_head(hidden))


def completion_logprobs(model, rollout: Rollout, temperature: float, with_entropy: bool = False):
    """Log-probs of the completion tokens under `model` at the sampling temperature, [B, T] (and the
    per-token entropy of the policy, without gradient, if asked); see completion_forward."""
    logprobs, entropy, _ = completion_forward(model, rollout, temperature, with_entropy)
    return logprobs, entropy


def completion_values(decoder, value_head, rollout: Rollout) -> torch.Tensor:
    """`value_head` on `decoder`'s hidden states before each completion token: V [B, T]."""
    return value_head(completion_hidden_states(decoder, rollout))


class PolicyForward(torch.nn.Module):
    """The policy's training forward pass (completion_forward) as one module call, with the value head of a
    critic that shares its backbone: the module DDP or FSDP wraps, so that their hooks see every use of a weight."""

    def __init__(self, policy, value_head: torch.nn.Module | None = None):
        super().__init__()
        self.policy = policy
        self.value_head = value_head

    def forward(self, rollout: Rollout, temperature: float, with_entropy: bool = False):
        return completion_forward(self.policy, rollout, temperature, with_entropy, value_head=self.value_head)


class ValueForward(torch.nn.Module):
    """A critic with a decoder of its own, V [B, T] (completion_values) as one module call (for DDP)."""

    def __init__(self, critic: Critic):
        super().__init__()
        self.critic = critic

    def forward(self, rollout: Rollout) -> torch.Tensor:
        return completion_values(self.critic.backbone, self.critic, rollout)
