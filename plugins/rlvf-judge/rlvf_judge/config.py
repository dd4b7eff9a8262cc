"""The config of `rlvf train-judge`: the [judge] section (with [judge.rows]), and the stage's schema (the shared
base and [judge]). Torch-free, so that registering the command stays cheap."""

from __future__ import annotations

from typing import Literal

from rlvf.api import DatasetSource, EvalConfig, FinetuneConfig, StageConfig


class JudgeRowsConfig(EvalConfig):
    """`rlvf train-judge` without `judge.dataset`: labelled rows sampled on the [task] and verified with the reward
    mix (the accuracy reward decides: verified-correct = 1, incorrect = 0). The [eval] keys, other defaults."""

    model: str | None = None  # the policy sampled; none: [model] (the judge being trained)
    split: Literal["train", "eval"] = "train"
    limit: int | None = 200  # prompts
    n: int = 4  # samples per prompt
    temperature: float = 1.0
    max_new_tokens: int = 64
    # per verified-correct row, this many extra label-0 rows: its response with only the final answer changed
    # (rlvf.api.with_final_answer_changed; needs an integer `answer` column), kept if the accuracy reward rejects it
    hard_negatives: int = 0


class JudgeTrainConfig(FinetuneConfig, DatasetSource):
    """`rlvf train-judge`: train [model] to answer yes to label-1 rows and no to label-0 rows (rlvf_judge.train).
    `dataset`: prompt / response / label rows; none: generate them from the [task] (`rows`)."""

    output_dir: str = "runs/judge"
    eval_fraction: float = 0.2
    limit: int | None = None  # training rows; none: all
    rows: JudgeRowsConfig = JudgeRowsConfig()
    # The judge's question, as the `judge` reward asks it (keep the two the same); none: chosen per row as the
    # reward chooses it (rlvf_judge.judging.choose_template: REFERENCE_TEMPLATE for a row with an `answer`, else
    # DEFAULT_TEMPLATE)
    template: str | None = None
    system_prompt: str | None = None
    chat: bool | None = None  # through the tokenizer's chat template; none: if it has one
    yes: list[str] = ["yes"]
    no: list[str] = ["no"]
    format_weight: float = 1.0  # weight of -log(p(yes) + p(no)) next to the binary loss (1: full-vocabulary CE)


class JudgeStageConfig(StageConfig):
    """`rlvf train-judge`."""

    judge: JudgeTrainConfig = JudgeTrainConfig()
