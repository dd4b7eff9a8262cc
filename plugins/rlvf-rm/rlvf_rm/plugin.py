"""rlvf plugin entry point (`[project.entry-points.rlvf] rm = "rlvf_rm.plugin"`). Imports no torch: listing
plugins stays fast; the model is loaded when the reward is built or `rlvf train-rm` runs."""

from rlvf import hookimpl
from rlvf.api import Command
from rlvf_rm.config import RMStageConfig
from rlvf_rm.reward import RewardModelReward


@hookimpl
def register_rewards(register):
    register(RewardModelReward, name="reward_model",
             description="the score of a reward model (`rlvf train-rm` output or any HF sequence-classification "
                         "RM) for each (prompt, completion)")


def train_rm(args) -> None:
    from rlvf.api import print_stage_results
    from rlvf_rm.train import run_train_rm

    r = run_train_rm(args.config, args.registry, resume=args.resume or args.force_resume,
                     force_resume=args.force_resume)
    print_stage_results(r, [
        f"{r['train_pairs']} training pairs, {r['steps']} optimiser steps; held-out: {r['eval_pairs']} pairs "
        "(accuracy: the chosen completion scores higher)"], "reward model")


@hookimpl
def register_commands(register):
    register(Command(name="train-rm", help="train a Bradley-Terry reward model on preference pairs", run=train_rm,
                     schema=RMStageConfig))
