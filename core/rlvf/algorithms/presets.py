"""Named settings of the [algorithm] config section (`algorithm = "ppo"`): listed by `rlvf algorithms`."""

from __future__ import annotations

from typing import Any

# Named settings of [algorithm]: `algorithm = "ppo"`, or `[algorithm] preset = "ppo"` plus keys that replace the
# preset's (an options table given replaces the preset's table whole).
ALGORITHM_PRESETS: dict[str, dict[str, Any]] = {
    "grpo": {},
    "dr_grpo": {"advantage_options": {"scale_std": False}, "loss_aggregation": "constant_norm"},
    # DAPO's dynamic sampling is a train option: train.dynamic_sampling = true
    "dapo": {"policy_loss_options": {"eps_low": 0.2, "eps_high": 0.28}, "loss_aggregation": "token_mean",
             "beta": 0.0},
    "rloo": {"advantage": "rloo", "kl_in": "reward"},
    "reinforce": {"advantage": "reinforce", "kl_in": "reward"},
    "reinforce_pp": {"advantage": "reinforce_pp", "kl_estimator": "k1", "kl_in": "reward",
                     "loss_aggregation": "token_mean"},
    # InstructGPT's form: r_t = -beta log(pi / pi_ref) at every token, the reward at the last; GAE with a critic
    "ppo": {"advantage": "gae", "kl_estimator": "k1", "kl_in": "reward", "loss_aggregation": "token_mean"},
}
