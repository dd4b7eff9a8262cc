"""The optimiser every stage builds (rlvf.engine.optim): fused AdamW where the parameters allow it, the same updates
as torch's default AdamW, and the learning-rate schedule."""

from __future__ import annotations

import pytest
import torch

from rlvf.engine.optim import adamw_with_schedule, fused_supported, lr_factor


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3))


def test_the_fused_adamw_steps_like_torchs_default_adamw():
    ours, reference = _model(0), _model(0)
    optimizer, scheduler = adamw_with_schedule(ours.parameters(), lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95),
                                               total=5, warmup=2, schedule="cosine")
    assert optimizer.param_groups[0]["fused"] is True
    theirs = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), foreach=False)
    their_schedule = torch.optim.lr_scheduler.LambdaLR(theirs, lambda step: lr_factor(step, 5, 2, "cosine"))
    inputs = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        for model, opt, schedule in ((ours, optimizer, scheduler), (reference, theirs, their_schedule)):
            opt.zero_grad()
            model(inputs).square().mean().backward()
            opt.step()
            schedule.step()
    for mine, expected in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(next(ours.parameters()), next(_model(0).parameters()))  # it trained


def test_parameters_fused_adamw_may_not_take_get_torchs_default():
    class ShardedParameter(torch.nn.Parameter):  # stands for FSDP's FlatParameter, a Parameter subclass
        pass

    plain = torch.nn.Parameter(torch.zeros(3))
    assert fused_supported([plain])
    assert not fused_supported([plain, ShardedParameter(torch.zeros(3))])
    assert not fused_supported([torch.nn.Parameter(torch.zeros(3, dtype=torch.int64), requires_grad=False)])
    optimizer, _ = adamw_with_schedule([ShardedParameter(torch.zeros(3))], lr=1e-3, weight_decay=0.0,
                                       betas=(0.9, 0.999), total=1, warmup=0, schedule="constant")
    assert not optimizer.param_groups[0]["fused"]


@pytest.mark.parametrize(("schedule", "expected"), [("constant", [0.5, 1.0, 1.0, 1.0, 1.0]),
                                                    ("linear", [0.5, 1.0, 1.0, 0.5, 0.0]),
                                                    ("cosine", [0.5, 1.0, 1.0, 0.5, 0.0])])
def test_the_schedule_warms_up_then_follows_its_shape(schedule, expected):
    """Two warm-up steps of four, then the shape over the remaining two (0 at the end)."""
    assert [lr_factor(step, 4, 2, schedule) for step in range(5)] == pytest.approx(expected)
