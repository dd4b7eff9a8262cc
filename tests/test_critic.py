"""The critic: where its weights come from, values from the trainer's prefix-sharing forward, and the value model
(ValueModel) that trains it: its loss, optimiser step, schedule and checkpoint state."""

from __future__ import annotations

import io

import pytest
import torch

from rlvf.config import CriticConfig
from rlvf.engine.distributed import init_distributed
from rlvf.engine.optim import adamw_with_schedule, lr_factor
from rlvf.errors import ConfigError
from rlvf.models.critic import ValueModel, build_critic
from rlvf.models.forward import completion_forward, completion_values
from rlvf.stages.rollout import Rollout


@pytest.fixture(scope="module")
def policy_model(char_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(char_model_dir).eval()


def a_rollout() -> Rollout:
    """Two prompts (lengths 3 and 4) with two completions each, right-padded, rows of a group interleaved."""
    prompts, completions = [[5, 6, 7], [8, 9, 10, 11]], [[12, 13, 14], [15], [16, 17], [18, 19, 20]]
    group_ids = [0, 1, 0, 1]
    sequences = [prompts[g] + c for g, c in zip(group_ids, completions, strict=True)]
    width, steps = max(map(len, sequences)), max(map(len, completions))
    return Rollout(
        input_ids=torch.tensor([s + [2] * (width - len(s)) for s in sequences]),
        attention_mask=torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences]),
        completion_start=torch.tensor([len(prompts[g]) for g in group_ids]),
        completion_ids=torch.tensor([c + [-1] * (steps - len(c)) for c in completions]),
        mask=torch.tensor([[1.0] * len(c) + [0.0] * (steps - len(c)) for c in completions]),
        old_logprobs=torch.zeros(4, steps), group_ids=torch.tensor(group_ids))


def test_values_read_the_state_before_each_completion_token(policy_model):
    critic = build_critic(CriticConfig(), policy_model, vocab_size=policy_model.config.vocab_size)
    torch.nn.init.normal_(critic.head.weight)  # it starts at 0; make the values informative
    rollout = a_rollout()
    with torch.no_grad():
        values = completion_values(critic.decoder(policy_model), critic, rollout)
        for row in range(4):
            start, length = int(rollout.completion_start[row]), int(rollout.mask[row].sum())
            hidden = critic.backbone(rollout.input_ids[row: row + 1, : start + length]).last_hidden_state[0]
            expected = critic(hidden[start - 1: start + length - 1])  # V_t sees the tokens before token t
            assert torch.allclose(values[row, :length], expected, atol=1e-5)
        # a head on the policy's backbone, from the same forward that gives the log-probs
        shared = build_critic(CriticConfig(share_policy_backbone=True), policy_model, policy_model.config.vocab_size)
        shared.head.load_state_dict(critic.head.state_dict())
        logprobs, _, shared_values = completion_forward(policy_model, rollout, 1.0, value_head=shared)
    assert shared.backbone is None and torch.allclose(shared_values, values, atol=1e-5)  # the copy = the policy
    assert logprobs.shape == values.shape == rollout.mask.shape


def test_critic_initialised_from_the_policy_a_causal_lm_or_a_reward_model(policy_model, char_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    vocab = policy_model.config.vocab_size
    copy = build_critic(CriticConfig(), policy_model, vocab)
    assert copy.head.weight.abs().sum() == 0 and copy.head.bias.item() == 0.0  # V = 0 at first
    embeddings = policy_model.get_input_embeddings().weight
    assert torch.equal(copy.backbone.get_input_embeddings().weight, embeddings)
    assert copy.backbone.get_input_embeddings().weight.data_ptr() != embeddings.data_ptr()  # its own weights

    from_lm = build_critic(CriticConfig(init=str(char_model_dir)), policy_model, vocab)
    assert torch.equal(from_lm.backbone.get_input_embeddings().weight, embeddings)

    torch.manual_seed(1)
    reward_model = AutoModelForSequenceClassification.from_pretrained(char_model_dir, num_labels=1)
    reward_model.save_pretrained(tmp_path / "rm")
    from_rm = build_critic(CriticConfig(init=str(tmp_path / "rm")), policy_model, vocab)
    assert torch.equal(from_rm.head.weight, reward_model.score.weight)  # the RM's score head starts the values

    with pytest.raises(ConfigError, match=r"critic.init .* fewer than the policy's tokenizer"):
        build_critic(CriticConfig(init=str(char_model_dir)), policy_model, vocab_size=vocab + 10)
    with pytest.raises(ConfigError, match=r"critic.init = '.*missing': no such directory"):
        build_critic(CriticConfig(init=str(tmp_path / "missing")), policy_model, vocab)


def squared_error(values, old_values, returns, mask, clip):
    """A value loss as VALUE_LOSSES entries are called: (per-token loss, metrics)."""
    return (values - returns) ** 2, {"old_distance": ((values - old_values).abs() * mask).sum()}


def masked_token_mean(loss, mask, totals):
    return (loss * mask).sum() / totals.tokens


def a_value_model(policy_model, share: bool = False, lr: float = 1e-2) -> ValueModel:
    critic = build_critic(CriticConfig(share_policy_backbone=share), policy_model, policy_model.config.vocab_size)
    optimizer, scheduler = adamw_with_schedule(critic.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.999),
                                               total=4, warmup=0, schedule="linear")
    return ValueModel(critic, policy_model, optimizer=optimizer, scheduler=scheduler, value_loss=squared_error,
                      aggregate=masked_token_mean, clip=0.2, max_grad_norm=1.0, dist=init_distributed())


def test_value_model_steps_towards_the_returns_on_its_schedule_and_resumes_from_its_state(policy_model):
    from rlvf.algorithms import BatchTotals

    model = a_value_model(policy_model)
    rollout = a_rollout()
    rollout.values = model.values(rollout)  # V_old, as the rollout is made
    assert not rollout.values.requires_grad and torch.count_nonzero(rollout.values) == 0  # the head starts at 0
    rollout.returns = torch.ones_like(rollout.mask)
    totals = BatchTotals(sequences=4, tokens=int(rollout.mask.sum()), max_tokens=3)
    losses = []
    for step in range(3):
        loss, metrics = model.loss(rollout, None, totals)  # None: the critic's own decoder runs
        assert set(metrics) == {"value_loss", "old_distance"} and torch.equal(metrics["value_loss"], loss.detach())
        loss.backward()
        losses.append(float(loss.detach()))
        assert model.step() > 0  # the gradient norm before clipping
        assert all(p.grad is None for p in model.parameters())  # zeroed for the next mini-batch
        assert model.scheduler.get_last_lr()[0] == pytest.approx(1e-2 * lr_factor(step + 1, 4, 0, "linear"))
    assert losses[0] == pytest.approx(1.0) and losses[-1] < losses[0]  # V moves from 0 towards R = 1

    resumed = a_value_model(policy_model)
    resumed.module.load_state_dict(model.module.state_dict())
    state = model.state_dict()
    assert set(state) == {"critic_optimizer", "critic_scheduler"}  # the checkpoint's entries
    saved = io.BytesIO()
    torch.save(state, saved)  # as into a checkpoint: the resumed optimizer shares no tensor with this one
    resumed.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=False))
    assert resumed.scheduler.get_last_lr() == model.scheduler.get_last_lr()
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(model.optimizer.state[p]["exp_avg"], resumed.optimizer.state[q]["exp_avg"])
    for m in (model, resumed):
        m.loss(rollout, None, totals)[0].backward()
        m.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), resumed.parameters(), strict=True))


def test_a_value_model_on_the_policy_backbone_takes_the_policy_forward_values(policy_model):
    from rlvf.algorithms import BatchTotals

    model = a_value_model(policy_model, share=True)
    assert model.shares_policy and model.backbone is None and model.value_forward is None
    assert sum(p.numel() for p in model.parameters()) == policy_model.config.hidden_size + 1
    rollout = a_rollout()
    rollout.values, rollout.returns = model.values(rollout), torch.ones_like(rollout.mask)
    _, _, values = completion_forward(policy_model, rollout, 1.0, value_head=model.module)
    totals = BatchTotals(sequences=4, tokens=int(rollout.mask.sum()), max_tokens=3)
    loss, _ = model.loss(rollout, values, totals)
    assert torch.equal(loss, masked_token_mean((values - 1) ** 2, rollout.mask, totals))
