"""rlvf plugin entry point (`[project.entry-points.rlvf] prm = "rlvf_prm.plugin"`). Imports no torch: listing
plugins stays fast; the model is loaded when the reward is built or `rlvf train-prm` runs."""

from rlvf import hookimpl
from rlvf.api import training_stage
from rlvf_prm import exploits
from rlvf_prm.config import PRMStageConfig
from rlvf_prm.reward import PRMReward


@hookimpl
def register_rewards(register):
    register(PRMReward, name="prm",
             description="per-step p(step correct) of a process reward model (`rlvf train-prm` output), as step "
                         "scores: steps split at a separator (default a newline)")


@hookimpl
def register_exploits(register):
    exploits.register(register)


def _summary(r) -> list[str]:
    generated = [f"generated {key}: {value:.4f}" if isinstance(value, float) else f"generated {key}: {value}"
                 for key, value in (r.get("generated") or {}).items()]
    return [*generated, f"{r['train_rows']} training rows ({r['train_steps']} steps, {r['train_wrong_steps']} "
            f"labelled wrong), {r['steps']} optimiser steps; held-out: {r['eval_rows']} rows ({r['eval_steps']} steps, "
            f"{r['eval_wrong_steps']} labelled wrong; auc: p ranks a correct step above a wrong one; "
            "first_error_accuracy: the first step with p < 0.5 is the first step labelled wrong, or neither has one)"]


@hookimpl
def register_commands(register):
    register(training_stage(
        "train-prm", "train a process reward model: p(step correct) at each step, on labelled steps or Monte-Carlo "
        "labels sampled on a task", PRMStageConfig, "rlvf_prm.train:run_train_prm", _summary,
        saved_as="process reward model"))
