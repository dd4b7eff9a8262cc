"""rlvf plugin entry point (`[project.entry-points.rlvf] judge = "rlvf_judge.plugin"`). Imports neither torch
nor httpx: listing plugins stays fast; the judge model or server connection is set up when the reward is built."""

from rlvf import hookimpl
from rlvf_judge.reward import JudgeReward


@hookimpl
def register_rewards(register):
    register(JudgeReward, name="judge",
             description="an LLM judge's p(yes) / (p(yes) + p(no)) that the completion is good (or its weighted "
                         "rubric ratings), from a local causal LM or an OpenAI-compatible server")
