"""The trainer's forward pass over a rollout's completions: log-probs (and entropy) of the completion tokens, and
values of a critic's head on the same hidden states. Each prompt runs through the decoder once for all its
completions (completion_hidden_states), and the LM head only on the states that predict completion tokens.

PolicyForward and ValueForward are these passes as module calls: the modules DDP or FSDP wrap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # no import at run time: models/ does not depend on stages/
    from rlvf.models.critic import Critic
    from rlvf.stages.rollout import Rollout


def completion_hidden_states(decoder, rollout: Rollout):
    """Per group of the rollout: (its rows, the decoder's hidden states [rows, T, H] that predict its
    completion tokens), i.e. position t holds the state before completion token t.

    The G completions of a prompt share it, so each prompt runs through the decoder once and its KV cache is
    repeated for its completions: with few-shot prompts, most tokens of a batch are prompt tokens.
    """
    device = rollout.input_ids.device
    steps = rollout.completion_ids.shape[1]
    for group in torch.unique(rollout.group_ids).tolist():
        rows = (rollout.group_ids == group).nonzero().squeeze(1)
        start = int(rollout.completion_start[rows[0]])
        prefix = decoder(input_ids=rollout.input_ids[rows[0], :start][None], use_cache=True)
        hidden = prefix.last_hidden_state[:, -1:].expand(len(rows), -1, -1)  # predicts the first token
        tokens = rollout.completion_ids[rows.to(device)].clamp(min=0)
        if steps > 1:
            cache = prefix.past_key_values
            cache.batch_repeat_interleave(len(rows))
            attention = torch.cat([torch.ones(len(rows), start, dtype=torch.long, device=device),
                                   (rollout.completion_ids[rows.to(device)] != -1).long()], dim=1)[:, :-1]
            positions = torch.arange(start, start + steps - 1, device=device).expand(len(rows), -1)
            body = decoder(input_ids=tokens[:, :-1], attention_mask=attention, position_ids=positions,
                           past_key_values=cache).last_hidden_state
            hidden = torch.cat([hidden, body], dim=1)
        yield rows, hidden


def _in_row_order(rows: list[torch.Tensor], parts: list[torch.Tensor]) -> torch.Tensor:
    order = torch.argsort(torch.cat(rows)).to(parts[0].device)  # back to the rollout's row order
    return torch.cat(parts)[order]


def completion_forward(model, rollout: Rollout, temperature: float, with_entropy: bool = False,
                       value_head=None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(log-probs [B, T] of the completion tokens under `model` at the sampling temperature, the per-token
    entropy of the policy without gradient if asked, and `value_head` applied to the same hidden states if
    given: a critic sharing the policy's backbone). The LM head (49k x 576 for SmolLM2) runs only on the
    hidden states that predict completion tokens."""
    head = model.get_output_embeddings()
    rows_out, logprobs_out, entropy_out, values_out = [], [], [], []
    for rows, hidden in completion_hidden_states(model.get_decoder(), rollout):
        tokens = rollout.completion_ids[rows.to(hidden.device)].clamp(min=0)
        log_probs = torch.log_softmax(head(hidden).float() / max(temperature, 1e-6), dim=-1)
        logprobs_out.append(log_probs.gather(-1, tokens[:, :, None]).squeeze(-1))
        if with_entropy:
            with torch.no_grad():
                entropy_out.append(-(log_probs.exp() * log_probs).sum(-1))
        if value_head is not None:
            values_out.append(value_head(hidden))
        rows_out.append(rows)
    entropy = _in_row_order(rows_out, entropy_out) if with_entropy else None
    values = _in_row_order(rows_out, values_out) if value_head is not None else None
    return _in_row_order(rows_out, logprobs_out), entropy, values


def completion_logprobs(model, rollout: Rollout, temperature: float, with_entropy: bool = False):
    """Log-probs of the completion tokens under `model` at the sampling temperature, [B, T] (and the
    per-token entropy of the policy, without gradient, if asked); see completion_forward."""
    logprobs, entropy, _ = completion_forward(model, rollout, temperature, with_entropy)
    return logprobs, entropy


def completion_values(decoder, value_head, rollout: Rollout) -> torch.Tensor:
    """`value_head` on `decoder`'s hidden states before each completion token: V [B, T]."""
    rows_out, values_out = [], []
    for rows, hidden in completion_hidden_states(decoder, rollout):
        values_out.append(value_head(hidden))
        rows_out.append(rows)
    return _in_row_order(rows_out, values_out)


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
