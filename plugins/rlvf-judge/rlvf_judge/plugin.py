"""rlvf plugin entry point (`[project.entry-points.rlvf] judge = "rlvf_judge.plugin"`). Imports neither torch
nor httpx: listing plugins stays fast; the judge model or server connection is set up when the reward is built,
and `rlvf train-judge` imports its stage when it runs."""

from rlvf import hookimpl
from rlvf.api import training_stage
from rlvf_judge.config import JudgeStageConfig
from rlvf_judge.reward import JudgeReward


@hookimpl
def register_rewards(register):
    register(JudgeReward, name="judge",
             description="an LLM judge's p(yes) / (p(yes) + p(no)) that the completion is good (or its weighted "
                         "rubric ratings), from a local causal LM or an OpenAI-compatible server")


def _summary(r) -> list[str]:
    generated = [f"generated {key}: {value:.4f}" if isinstance(value, float) else f"generated {key}: {value}"
                 for key, value in (r.get("generated") or {}).items()]
    return [*generated, f"{r['train_rows']} training rows ({r['train_positive']} labelled 1), {r['steps']} "
            f"optimiser steps; held-out: {r['eval_rows']} rows ({r['eval_positive']} labelled 1; auc: p(yes) ranks a "
            "label-1 row above a label-0 row)"]


@hookimpl
def register_commands(register):
    register(training_stage("train-judge", "train an LLM judge: p(yes) up on label-1 rows, p(no) on label-0 rows",
                            JudgeStageConfig, "rlvf_judge.train:run_train_judge", _summary, saved_as="judge"))
