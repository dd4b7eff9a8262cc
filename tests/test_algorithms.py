"""Each registry entry against values computed by hand from the seed formulas."""

from __future__ import annotations

import math

import pytest
import torch

from rlvf import algorithms
from rlvf.algorithms import AdvantageInputs, BatchTotals
from rlvf.errors import ConfigError


def inputs(scores, groups, tokens=2):
    scores = torch.tensor(scores, dtype=torch.float)
    return AdvantageInputs(scores=scores, group_ids=torch.tensor(groups), mask=torch.ones(len(scores), tokens))


def test_grpo_group_normalised_advantages():
    # group 0: rewards 1, 0, 0 -> mean 1/3, unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3)
    advantages = algorithms.ADVANTAGE_ESTIMATORS["grpo"](inputs([1, 0, 0, 2, 4], [0, 0, 0, 1, 1]), eps=0.0)
    std0, std1 = math.sqrt(1 / 3), math.sqrt(2)  # group 1: 2, 4 -> mean 3, std sqrt(2)
    expected = [(2 / 3) / std0, (-1 / 3) / std0, (-1 / 3) / std0, -1 / std1, 1 / std1]
    assert advantages[:, 0].tolist() == pytest.approx(expected)
    assert torch.equal(advantages[:, 0], advantages[:, 1])  # shared by every token of the completion


def test_dr_grpo_drops_the_std_and_batch_normalisation_uses_the_batch_std():
    dr = algorithms.ADVANTAGE_ESTIMATORS["grpo"](inputs([1, 0, 0, 2, 4], [0, 0, 0, 1, 1]), scale_std=False)
    assert dr[:, 0].tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, -1, 1])
    batch = algorithms.ADVANTAGE_ESTIMATORS["grpo"](inputs([1, 0, 0, 2, 4], [0, 0, 0, 1, 1]),
                                                    normalize="batch", eps=0.0)
    batch_std = torch.tensor([1.0, 0, 0, 2, 4]).std().item()  # unbiased over all five
    assert batch[:, 0].tolist() == pytest.approx([x / batch_std for x in [2 / 3, -1 / 3, -1 / 3, -1, 1]])


def test_grpo_equal_rewards_give_exactly_zero_advantage_and_masked_tokens_zero():
    # 0.1 is not exact in binary: the group mean differs from 0.1 by rounding, and (r - mean) / (std + eps)
    # would then be ~1e-4, which Adam turns into a full-size step. It must be exactly zero.
    data = inputs([0.1] * 8 + [1.1] * 8 + [0.1, 1.1], [0] * 8 + [1] * 8 + [2, 2], tokens=3)
    data.mask[17, 2] = 0
    advantages = algorithms.ADVANTAGE_ESTIMATORS["grpo"](data)
    assert torch.count_nonzero(advantages[:16]) == 0
    assert advantages[16, 0] < 0 < advantages[17, 0] and advantages[17, 2] == 0


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert algorithms.KL_ESTIMATORS["k1"](logp, ref).item() == pytest.approx(math.log(2))
    assert algorithms.KL_ESTIMATORS["k2"](logp, ref).item() == pytest.approx(0.5 * math.log(2) ** 2)
    # k3 with r = pi_ref / pi = 0.5: r - log r - 1 = 0.5 + log 2 - 1
    assert algorithms.KL_ESTIMATORS["k3"](logp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)
    assert algorithms.KL_ESTIMATORS["k3"](logp, logp).item() == 0.0


def test_clipped_surrogate_by_hand_with_clip_higher():
    old = torch.zeros(1, 4)
    # ratios 1.5, 0.5, 1.1, 1.25 ; advantages +1, -1, +1, +1 ; eps_low 0.2, eps_high 0.28
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.25]]))
    advantages = torch.tensor([[1.0, -1.0, 1.0, 1.0]])
    loss, metrics = algorithms.POLICY_LOSSES["clipped"](new, old, advantages, torch.ones(1, 4),
                                                        eps_low=0.2, eps_high=0.28)
    # -min(r A, clip(r) A): 1.5 -> clipped to 1.28; 0.5 with A<0 -> -min(-0.5, -0.8) = 0.8; 1.1 -> 1.1; 1.25 -> 1.25
    assert loss[0].tolist() == pytest.approx([-1.28, 0.8, -1.1, -1.25])
    assert metrics["clip_fraction"].item() == pytest.approx(2 / 4)


def test_loss_aggregations_by_hand_and_micro_batches_add_up():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    totals = BatchTotals(sequences=2, tokens=4, max_tokens=5)
    assert algorithms.LOSS_AGGREGATIONS["seq_mean"](loss, mask, totals).item() == pytest.approx((2 + 4) / 2)
    assert algorithms.LOSS_AGGREGATIONS["token_mean"](loss, mask, totals).item() == pytest.approx(10 / 4)
    assert algorithms.LOSS_AGGREGATIONS["constant_norm"](loss, mask, totals).item() == pytest.approx(10 / (2 * 5))
    for name, aggregate in algorithms.LOSS_AGGREGATIONS.items():
        whole = aggregate(loss, mask, totals)
        parts = aggregate(loss[:1], mask[:1], totals) + aggregate(loss[1:], mask[1:], totals)
        assert parts.item() == pytest.approx(whole.item()), name


def test_registries_name_what_exists():
    with pytest.raises(ConfigError, match=r"unknown advantage estimator 'ppo2'; available: grpo"):
        algorithms.ADVANTAGE_ESTIMATORS.get_checked("ppo2")
    with pytest.raises(ValueError, match="already registered"):
        algorithms.KL_ESTIMATORS.register("k3")(lambda a, b: a)
    with pytest.raises(ConfigError, match=r"advantage estimator 'grpo'.*unexpected keyword argument 'scale'"):
        algorithms.call_with_options(algorithms.ADVANTAGE_ESTIMATORS["grpo"], inputs([1, 0], [0, 0]),
                                     options={"scale": True}, what="advantage estimator 'grpo'")
