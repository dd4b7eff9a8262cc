"""rlvf plugin entry point (`[project.entry-points.rlvf] rm = "rlvf_rm.plugin"`). Imports no torch: listing
plugins stays fast; the model is loaded when the reward is built or `rlvf train-rm` runs."""

from rlvf import hookimpl
from rlvf.api import training_stage
from rlvf_rm.config import RMStageConfig
from rlvf_rm.reward import RewardModelReward


@hookimpl
def register_rewards(register):
    register(RewardModelReward, name="reward_model",
             description="the score of a reward model (`rlvf train-rm` output or any HF sequence-classification "
                         "RM) for each (prompt, completion)")


@hookimpl
def register_commands(register):
    register(training_stage(
        "train-rm", "train a Bradley-Terry reward model on preference pairs", RMStageConfig,
        "rlvf_rm.train:run_train_rm", lambda r: [
            f"{r['train_pairs']} training pairs, {r['steps']} optimiser steps; held-out: {r['eval_pairs']} pairs "
            "(accuracy: the chosen completion scores higher)"], saved_as="reward model"))
