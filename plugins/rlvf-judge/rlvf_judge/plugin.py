"""rlvf plugin entry point (`[project.entry-points.rlvf] judge = "rlvf_judge.plugin"`). Imports neither torch
nor httpx: listing plugins stays fast; the judge model or server connection is set up when the reward is built,
and `rlvf train-judge` imports its stage when it runs."""

from rlvf import hookimpl
from rlvf.api import Command
from rlvf_judge.config import JudgeStageConfig
from rlvf_judge.reward import JudgeReward


@hookimpl
def register_rewards(register):
    register(JudgeReward, name="judge",
             description="an LLM judge's p(yes) / (p(yes) + p(no)) that the completion is good (or its weighted "
                         "rubric ratings), from a local causal LM or an OpenAI-compatible server")


def train_judge(args) -> None:
    from rlvf.api import print_stage_results
    from rlvf_judge.train import run_train_judge

    r = run_train_judge(args.config, args.registry, resume=args.resume or args.force_resume,
                        force_resume=args.force_resume)
    generated = [f"generated {key}: {value:.4f}" if isinstance(value, float) else f"generated {key}: {value}"
                 for key, value in (r.get("generated") or {}).items()]
    print_stage_results(r, [*generated, f"{r['train_rows']} training rows ({r['train_positive']} labelled 1), "
                            f"{r['steps']} optimiser steps; held-out: {r['eval_rows']} rows ({r['eval_positive']} "
                            "labelled 1; auc: p(yes) ranks a label-1 row above a label-0 row)"], "judge")


@hookimpl
def register_commands(register):
    register(Command(name="train-judge", help="train an LLM judge: p(yes) up on label-1 rows, p(no) on label-0 rows",
                     run=train_judge, schema=JudgeStageConfig))
