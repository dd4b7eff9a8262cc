"""Each registry entry against values computed by hand from the seed formulas."""

from __future__ import annotations

import math

import pytest
import torch

from rlvf import algorithms
from rlvf.algorithms import AdvantageInputs, BatchTotals
from rlvf.algorithms.advantages import discounted_sum_to_go, masked_whiten
from rlvf.errors import ConfigError
from rlvf.plugins import load_registry

# the entries as the trainer finds them: registered by the core's builtin-algorithms entry point
REGISTERED = load_registry().algorithms


def inputs(scores, groups, tokens=2):
    scores = torch.tensor(scores, dtype=torch.float)
    return AdvantageInputs(scores=scores, group_ids=torch.tensor(groups), mask=torch.ones(len(scores), tokens))


def test_grpo_group_normalised_advantages():
    # group 0: rewards 1, 0, 0 -> mean 1/3, unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3)
    advantages = REGISTERED.advantage["grpo"](inputs([1, 0, 0, 2, 4], [0, 0, 0, 1, 1]), eps=0.0)
    std0, std1 = math.sqrt(1 / 3), math.sqrt(2)  # group 1: 2, 4 -> mean 3, std sqrt(2)
    expected = [(2 / 3) / std0, (-1 / 3) / std0, (-1 / 3) / std0, -1 / std1, 1 / std1]
    assert advantages[:, 0].tolist() == pytest.approx(expected)
    assert torch.equal(advantages[:, 0], advantages[:, 1])  # shared by every token of the completion


def test_dr_grpo_drops_the_std_and_batch_normalisation_uses_the_batch_std():
    dr = REGISTERED.advantage["grpo"](inputs([1, 0, 0, 2, 4], [0, 0, 0, 1, 1]), scale_std=False)
    assert dr[:, 0].tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, -1, 1])
    batch = REGISTERED.advantage["grpo"](inputs([1, 0, 0, 2, 4], [0, 0, 0, 1, 1]),
                                                    normalize="batch", eps=0.0)
    batch_std = torch.tensor([1.0, 0, 0, 2, 4]).std().item()  # unbiased over all five
    assert batch[:, 0].tolist() == pytest.approx([x / batch_std for x in [2 / 3, -1 / 3, -1 / 3, -1, 1]])


def test_grpo_equal_rewards_give_exactly_zero_advantage_and_masked_tokens_zero():
    # 0.1 is not exact in binary: the group mean differs from 0.1 by rounding, and (r - mean) / (std + eps)
    # would then be ~1e-4, which Adam turns into a full-size step. It must be exactly zero.
    data = inputs([0.1] * 8 + [1.1] * 8 + [0.1, 1.1], [0] * 8 + [1] * 8 + [2, 2], tokens=3)
    data.mask[17, 2] = 0
    advantages = REGISTERED.advantage["grpo"](data)
    assert torch.count_nonzero(advantages[:16]) == 0
    assert advantages[16, 0] < 0 < advantages[17, 0] and advantages[17, 2] == 0


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert REGISTERED.kl_estimator["k1"](logp, ref).item() == pytest.approx(math.log(2))
    assert REGISTERED.kl_estimator["k2"](logp, ref).item() == pytest.approx(0.5 * math.log(2) ** 2)
    # k3 with r = pi_ref / pi = 0.5: r - log r - 1 = 0.5 + log 2 - 1
    assert REGISTERED.kl_estimator["k3"](logp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)
    assert REGISTERED.kl_estimator["k3"](logp, logp).item() == 0.0


def test_clipped_surrogate_by_hand_with_clip_higher():
    old = torch.zeros(1, 4)
    # ratios 1.5, 0.5, 1.1, 1.25 ; advantages +1, -1, +1, +1 ; eps_low 0.2, eps_high 0.28
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.25]]))
    advantages = torch.tensor([[1.0, -1.0, 1.0, 1.0]])
    loss, metrics = REGISTERED.policy_loss["clipped"](new, old, advantages, torch.ones(1, 4),
                                                        eps_low=0.2, eps_high=0.28)
    # -min(r A, clip(r) A): 1.5 -> clipped to 1.28; 0.5 with A<0 -> -min(-0.5, -0.8) = 0.8; 1.1 -> 1.1; 1.25 -> 1.25
    assert loss[0].tolist() == pytest.approx([-1.28, 0.8, -1.1, -1.25])
    assert metrics["clip_fraction"].item() == pytest.approx(2 / 4)


def test_loss_aggregations_by_hand_and_micro_batches_add_up():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    totals = BatchTotals(sequences=2, tokens=4, max_tokens=5)
    assert REGISTERED.loss_aggregation["seq_mean"](loss, mask, totals).item() == pytest.approx((2 + 4) / 2)
    assert REGISTERED.loss_aggregation["token_mean"](loss, mask, totals).item() == pytest.approx(10 / 4)
    assert REGISTERED.loss_aggregation["constant_norm"](loss, mask, totals).item() == pytest.approx(10 / (2 * 5))
    for name, aggregate in REGISTERED.loss_aggregation.items():
        whole = aggregate(loss, mask, totals)
        parts = aggregate(loss[:1], mask[:1], totals) + aggregate(loss[1:], mask[1:], totals)
        assert parts.item() == pytest.approx(whole.item()), name


def test_registries_name_what_exists():
    with pytest.raises(ConfigError, match=r"unknown advantage estimator 'ppo2'; "
                       r"available: gae, grpo, reinforce, reinforce_pp, rloo"):
        REGISTERED.advantage.get_checked("ppo2")
    with pytest.raises(ValueError, match="already registered"):
        REGISTERED.kl_estimator.add("k3", lambda a, b: a)
    with pytest.raises(ConfigError, match=r"advantage estimator 'grpo'.*unexpected keyword argument 'scale'"):
        algorithms.call_with_options(REGISTERED.advantage["grpo"], inputs([1, 0], [0, 0]),
                                     options={"scale": True}, what="advantage estimator 'grpo'")


# --- issue 7: KL in the reward, REINFORCE, RLOO, REINFORCE++, GAE, value loss, presets ---

def test_sequence_and_token_rewards_fold_the_kl_penalty_in():
    data = AdvantageInputs(scores=torch.tensor([1.0, 0.0]), group_ids=torch.tensor([0, 0]),
                           mask=torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]),
                           kl_penalty=torch.tensor([[0.1, 0.2, 0.1], [0.0, 0.3, 0.5]]))
    # the padded 0.5 is off the mask: row 0 1 - (0.1 + 0.2 + 0.1) = 0.6, row 1 0 - 0.3 = -0.3
    assert data.sequence_rewards().tolist() == pytest.approx([0.6, -0.3])
    # -kl at every token, the score added on the last real token (index 2, then index 1)
    assert data.token_rewards().tolist() == [pytest.approx([-0.1, -0.2, 0.9]), pytest.approx([0.0, -0.3, 0.0])]
    no_kl = AdvantageInputs(scores=torch.tensor([2.0]), group_ids=torch.tensor([0]), mask=torch.tensor([[1.0, 0.0]]))
    assert no_kl.sequence_rewards().tolist() == [2.0] and no_kl.token_rewards().tolist() == [[2.0, 0.0]]


def test_grpo_with_kl_in_the_reward_is_grpo_on_the_folded_scores():
    penalty = torch.tensor([[0.1, 0.0], [0.3, 0.1], [0.0, 0.0]])
    with_kl = inputs([1, 0, 0], [0, 0, 0])
    with_kl.kl_penalty = penalty
    folded = inputs([1 - 0.1, 0 - 0.4, 0], [0, 0, 0])
    grpo = REGISTERED.advantage["grpo"]
    assert torch.allclose(grpo(with_kl), grpo(folded))


def test_reinforce_subtracts_the_batch_mean():
    # rewards 1, 0, 0, 3 -> mean 1 -> advantages 0, -1, -1, 2 on every token
    advantages = REGISTERED.advantage["reinforce"](inputs([1, 0, 0, 3], [0, 0, 1, 1]))
    assert advantages[:, 0].tolist() == [0.0, -1.0, -1.0, 2.0]
    assert torch.equal(advantages[:, 0], advantages[:, 1])
    equal = REGISTERED.advantage["reinforce"](inputs([0.1] * 3, [0, 1, 2]))
    assert torch.count_nonzero(equal) == 0  # exactly, not the mean's rounding error


def test_rloo_leave_one_out_baseline_on_a_group_of_three():
    # group 0 = rewards 1, 0, 4: each minus the mean of the two others
    #   1 - (0 + 4) / 2 = -1 ;  0 - (1 + 4) / 2 = -2.5 ;  4 - (1 + 0) / 2 = 3.5
    # group 1 = 2, 2, 2: all equal -> exactly 0
    advantages = REGISTERED.advantage["rloo"](inputs([1, 0, 4, 2, 2, 2], [0, 0, 0, 1, 1, 1]))
    assert advantages[:, 0].tolist() == [-1.0, -2.5, 3.5, 0.0, 0.0, 0.0]
    assert torch.equal(advantages[:, 0], advantages[:, 1])
    # = G/(G-1) (r - group mean): 3/2 (1 - 5/3) = -1
    assert algorithms.declared(REGISTERED.advantage["rloo"], "needs_groups")


def test_reinforce_pp_token_rewards_returns_to_go_and_global_normalisation():
    data = AdvantageInputs(scores=torch.tensor([1.0, 0.0]), group_ids=torch.tensor([0, 1]),
                           mask=torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]),
                           kl_penalty=torch.tensor([[0.1, 0.2, 0.1], [0.0, 0.3, 0.0]]))
    # token rewards: row 0 [-0.1, -0.2, 1 - 0.1] ; row 1 [0, -0.3]
    # returns to go (gamma = 1): row 0 [0.6, 0.7, 0.9] ; row 1 [-0.3, -0.3]
    # over the 5 real tokens: mean 1.6 / 5 = 0.32; deviations 0.28, 0.38, 0.58, -0.62, -0.62
    # unbiased variance (0.0784 + 0.1444 + 0.3364 + 0.3844 + 0.3844) / 4 = 0.332
    std = math.sqrt(0.332)
    advantages = REGISTERED.advantage["reinforce_pp"](data, eps=0.0)
    assert advantages[0].tolist() == pytest.approx([0.28 / std, 0.38 / std, 0.58 / std])
    assert advantages[1].tolist() == pytest.approx([-0.62 / std, -0.62 / std, 0.0])
    # gamma = 0.5 discounts: row 0 returns [-0.1 - 0.1 + 0.225, -0.2 + 0.45, 0.9] = [0.025, 0.25, 0.9]
    discounted = discounted_sum_to_go(data.token_rewards(), data.mask, 0.5)
    assert discounted[0].tolist() == pytest.approx([0.025, 0.25, 0.9])


def gae_example():
    # row 0: 4 tokens, values 0.5 0.4 0.3 0.2, kl penalties 0.1 0 0.2 0.1, score 1
    # row 1: 2 real tokens (values 0.1 0.2; the 9s sit on padding), no kl, score 0
    return AdvantageInputs(scores=torch.tensor([1.0, 0.0]), group_ids=torch.tensor([0, 1]),
                           mask=torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]]),
                           kl_penalty=torch.tensor([[0.1, 0.0, 0.2, 0.1], [0.0, 0.0, 0.0, 0.0]]),
                           values=torch.tensor([[0.5, 0.4, 0.3, 0.2], [0.1, 0.2, 9.0, 9.0]]))


def test_gae_on_a_four_token_example_by_hand():
    gae = REGISTERED.advantage["gae"]
    assert algorithms.declared(gae, "needs_values")
    result = gae(gae_example(), gamma=0.9, lam=0.8, whiten=False)
    # row 0: token rewards r = [-0.1, 0, -0.2, 1 - 0.1 = 0.9]
    #   delta_3 = 0.9 + 0.9 * 0 - 0.2 = 0.7          (no value after the last token)
    #   delta_2 = -0.2 + 0.9 * 0.2 - 0.3 = -0.32
    #   delta_1 = 0 + 0.9 * 0.3 - 0.4 = -0.13
    #   delta_0 = -0.1 + 0.9 * 0.4 - 0.5 = -0.24
    #   gamma * lam = 0.72: A_3 = 0.7 ; A_2 = -0.32 + 0.72 * 0.7 = 0.184
    #   A_1 = -0.13 + 0.72 * 0.184 = 0.00248 ; A_0 = -0.24 + 0.72 * 0.00248 = -0.2382144
    assert result.advantages[0].tolist() == pytest.approx([-0.2382144, 0.00248, 0.184, 0.7])
    # returns = A + V
    assert result.returns[0].tolist() == pytest.approx([0.2617856, 0.40248, 0.484, 0.9])
    # row 1: r = [0, 0]; delta_1 = 0 - 0.2 = -0.2 ; delta_0 = 0.9 * 0.2 - 0.1 = 0.08
    #   A_1 = -0.2 ; A_0 = 0.08 + 0.72 * (-0.2) = -0.064 ; padding 0 (its values 9 never enter)
    assert result.advantages[1].tolist() == pytest.approx([-0.064, -0.2, 0.0, 0.0])
    assert result.returns[1].tolist() == pytest.approx([0.036, 0.0, 0.0, 0.0])
    # gamma = lam = 1 without values: every token's advantage is the sum of the rewards still to come
    plain = gae_example()
    plain.values = torch.zeros(2, 4)
    assert gae(plain, gamma=1.0, lam=1.0, whiten=False).advantages[0].tolist() == pytest.approx([0.6, 0.7, 0.7, 0.9])


def test_whitening_normalises_over_the_real_tokens_and_keeps_returns_raw():
    raw = REGISTERED.advantage["gae"](gae_example(), gamma=0.9, lam=0.8, whiten=False)
    white = REGISTERED.advantage["gae"](gae_example(), gamma=0.9, lam=0.8, whiten=True, eps=0.0)
    real = [-0.2382144, 0.00248, 0.184, 0.7, -0.064, -0.2]
    mean = sum(real) / 6
    std = math.sqrt(sum((x - mean) ** 2 for x in real) / 5)
    assert white.advantages[0].tolist() == pytest.approx([(x - mean) / std for x in real[:4]])
    assert white.advantages[1].tolist() == pytest.approx([(real[4] - mean) / std, (real[5] - mean) / std, 0, 0])
    assert torch.equal(white.returns, raw.returns)  # the critic's targets are not whitened
    rloo = REGISTERED.advantage["rloo"](inputs([1, 0, 4], [0, 0, 0], tokens=2), whiten=True)
    # [-1, -2.5, 3.5] on two tokens each: mean 0, unbiased std over 6 tokens sqrt(2 (1 + 6.25 + 12.25) / 5)
    assert rloo[:, 0].tolist() == pytest.approx([x / math.sqrt(7.8) for x in [-1, -2.5, 3.5]])
    assert torch.count_nonzero(masked_whiten(torch.full((2, 3), 0.1), torch.ones(2, 3))) == 0


def test_clipped_value_loss_by_hand():
    old = torch.tensor([[1.0, 1.0, 1.0]])
    values = torch.tensor([[1.5, 0.9, 1.5]], requires_grad=True)
    returns = torch.tensor([[2.0, 0.0, 1.0]])
    loss, metrics = REGISTERED.value_loss["clipped"](values, old, returns, torch.ones(1, 3), clip=0.2)
    # token 0: unclipped (1.5 - 2)^2 = 0.25 ; clipped V = 1 + 0.2 -> (1.2 - 2)^2 = 0.64 -> 0.5 * 0.64 = 0.32
    # token 1: moved by -0.1 < 0.2: both (0.9 - 0)^2 = 0.81 -> 0.405
    # token 2: unclipped (1.5 - 1)^2 = 0.25 ; clipped (1.2 - 1)^2 = 0.04 -> the max is the unclipped: 0.125
    assert loss[0].tolist() == pytest.approx([0.32, 0.405, 0.125])
    assert metrics["value_clip_fraction"].item() == pytest.approx(1 / 3)
    loss.sum().backward()
    # the clipped branch is constant in V: no gradient on token 0; V - R elsewhere
    assert values.grad[0].tolist() == pytest.approx([0.0, 0.9, 0.5])


def test_presets_fill_unset_keys_and_explicit_keys_win(tmp_path):
    from rlvf.algorithms.presets import ALGORITHM_PRESETS
    from rlvf.config import load_config

    ppo = load_config(None, ['algorithm="ppo"']).algorithm
    assert (ppo.advantage, ppo.kl_in, ppo.kl_estimator) == ("gae", "reward", "k1")
    path = tmp_path / "run.toml"
    path.write_text('[algorithm]\npreset = "dr_grpo"\nloss_aggregation = "token_mean"\n')
    dr = load_config(path).algorithm
    assert dr.advantage_options == {"scale_std": False} and dr.loss_aggregation == "token_mean"
    # an override switches the preset: keys the file did not set follow the new one
    switched = load_config(path, ["algorithm.preset=rloo"]).algorithm
    assert switched.advantage == "rloo" and switched.advantage_options == {}
    assert switched.loss_aggregation == "token_mean"
    for name, preset in ALGORITHM_PRESETS.items():  # every preset names registered entries
        config = load_config(None, [f"algorithm={name}"]).algorithm
        assert config.preset == name
        REGISTERED.advantage.get_checked(config.advantage)
        REGISTERED.loss_aggregation.get_checked(config.loss_aggregation)
        REGISTERED.kl_estimator.get_checked(config.kl_estimator)
        assert preset.keys() <= config.model_dump().keys()
    with pytest.raises(ConfigError, match=r"algorithm\.preset: .*unknown algorithm preset 'ppo2'; available: grpo"):
        load_config(None, ["algorithm=ppo2"])
