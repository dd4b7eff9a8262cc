"""The critic: where its weights come from, and values from the trainer's prefix-sharing forward."""

from __future__ import annotations

import pytest
import torch

from rlvf.config import CriticConfig
from rlvf.errors import ConfigError
from rlvf.models.critic import build_critic
from rlvf.stages.rl import Rollout, completion_forward, completion_values


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
