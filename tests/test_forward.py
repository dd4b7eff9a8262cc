"""The completion forward's LM head, chunk by chunk over the positions (rlvf.models.forward.token_logprobs): the
same log-probs, entropy and gradients as the plain log_softmax over the whole vocabulary, on a real tiny model with a
tied LM head as on a bare linear head."""

from __future__ import annotations

import pytest
import torch

import rlvf.models.forward
from rlvf.models.forward import completion_forward, token_logprobs
from rlvf.stages.rollout import Rollout

pytestmark = pytest.mark.timeout(120)


def plain(head, hidden, tokens, temperature):
    """log softmax(head(hidden) / T) over the whole vocabulary: its values at `tokens` and its entropy."""
    log_probs = torch.log_softmax(head(hidden).float() / temperature, dim=-1)
    return log_probs.gather(-1, tokens[..., None]).squeeze(-1), -(log_probs.exp() * log_probs).sum(-1)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("positions", [5, 128, 300])  # under one chunk, one exactly, several with a short last
def test_chunked_log_probs_and_gradients_equal_the_plain_formula(bias, positions):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 1000, bias=bias)
    hidden = torch.randn(positions, 16, requires_grad=True)
    tokens = torch.randint(0, 1000, (positions,))
    upstream = torch.randn(positions)  # any loss downstream of the log-probs
    expected, expected_entropy = plain(head, hidden, tokens, 0.7)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), [hidden, *head.parameters()])
    got, entropy = token_logprobs(head, hidden, tokens, 0.7, with_entropy=True)
    assert not entropy.requires_grad
    grads = torch.autograd.grad((got * upstream).sum(), [hidden, *head.parameters()])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(entropy, expected_entropy.detach(), rtol=1e-5, atol=1e-5)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


def test_a_frozen_head_passes_gradients_to_the_hidden_states_only():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 1000, bias=False).requires_grad_(False)
    hidden = torch.randn(200, 16, requires_grad=True)
    tokens = torch.randint(0, 1000, (200,))
    expected = torch.autograd.grad(plain(head, hidden, tokens, 1.0)[0].sum(), hidden)[0]
    got, entropy = token_logprobs(head, hidden, tokens, 1.0)
    assert entropy is None
    torch.testing.assert_close(torch.autograd.grad(got.sum(), hidden)[0], expected, rtol=1e-5, atol=1e-6)


def test_the_completion_forward_of_a_tied_model_equals_a_full_forward(tiny_model_dir, monkeypatch):
    """Completions of two prompts through completion_forward (prompt once, its KV repeated; the head chunked, here
    in chunks of 4 positions) against each sequence through the model on its own with the plain log_softmax: equal
    log-probs, and equal gradients of every parameter, the embedding that the LM head ties to included."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(rlvf.models.forward, "CHUNK", 4)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    prompts, completions, group_ids = [[5, 6, 7], [8, 9, 10, 11]], [[12, 13, 14], [15], [16, 17], [18, 19, 20]], \
        [0, 1, 0, 1]
    sequences = [prompts[g] + c for g, c in zip(group_ids, completions, strict=True)]
    width, steps = max(map(len, sequences)), max(map(len, completions))
    rollout = Rollout(
        input_ids=torch.tensor([s + [2] * (width - len(s)) for s in sequences]),
        attention_mask=torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences]),
        completion_start=torch.tensor([len(prompts[g]) for g in group_ids]),
        completion_ids=torch.tensor([c + [-1] * (steps - len(c)) for c in completions]),
        mask=torch.tensor([[1.0] * len(c) + [0.0] * (steps - len(c)) for c in completions]),
        old_logprobs=torch.zeros(4, steps), group_ids=torch.tensor(group_ids))
    weights = torch.randn(4, steps) * rollout.mask

    logprobs, entropy, _ = completion_forward(model, rollout, 0.8, with_entropy=True)
    (logprobs * weights).sum().backward()
    got = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    total = 0
    for row, (group, completion) in enumerate(zip(group_ids, completions, strict=True)):
        logits = model(torch.tensor([prompts[group] + completion])).logits[0, len(prompts[group]) - 1: -1]
        expected, expected_entropy = plain(torch.nn.Identity(), logits, torch.tensor(completion), 0.8)
        torch.testing.assert_close(logprobs[row, : len(completion)], expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(entropy[row, : len(completion)], expected_entropy.detach(), rtol=1e-5, atol=1e-5)
        total = total + (expected * weights[row, : len(completion)]).sum()
    total.backward()
    for name, parameter in model.named_parameters():
        # equal up to float32 summation order: the shared prompt's gradient sums its rows' in another order
        torch.testing.assert_close(got[name], parameter.grad, rtol=1e-4, atol=1e-5 * float(parameter.grad.abs().max()),
                                   msg=lambda m, n=name: f"{n}: {m}")
    assert got["model.embed_tokens.weight"].abs().sum() > 0
