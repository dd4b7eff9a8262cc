"""rlvf plugin entry point (`[project.entry-points.rlvf] rm = "rlvf_rm.plugin"`). Imports no torch: listing
plugins stays fast; the model is loaded when the reward is built."""

from rlvf import hookimpl
from rlvf_rm.reward import RewardModelReward


@hookimpl
def register_rewards(register):
    register(RewardModelReward, name="reward_model",
             description="the score of a reward model (`rlvf train-rm` output or any HF sequence-classification "
                         "RM) for each (prompt, completion)")
