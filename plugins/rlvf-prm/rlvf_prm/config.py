"""The config of `rlvf train-prm`: the [prm] section (with [prm.rows]), and the stage's schema (the shared base and
[prm], the [task] defaulting to `multistep`). Torch-free, so that registering the command stays cheap."""

from __future__ import annotations

from typing import Literal

from rlvf.api import DatasetSource, FinetuneConfig, Section, StageConfig


class PRMRowsConfig(Section):
    """`rlvf train-prm` without `prm.dataset`: step-labelled rows made from the [task] with no labeller (Monte
    Carlo, as in Math-Shepherd): `n` completions per prompt are sampled and split into steps at `prm.separator`;
    step k is labelled by sampling `continuations` continuations from the prompt and the completion up to the end
    of step k and verifying each with the accuracy reward (a completion's last step, when it ended, by the
    completion's own verdict)."""

    model: str | None = None  # the policy sampled; none: [model] (the PRM's starting checkpoint)
    split: Literal["train", "eval"] = "train"  # of the [task]
    limit: int | None = 40  # prompts
    n: int = 2  # completions per prompt
    temperature: float = 1.0  # of completions and continuations
    top_p: float = 1.0
    max_new_tokens: int = 48  # of a completion
    max_steps: int | None = 4  # steps labelled per completion (its first ones); none: all
    continuations: int = 2  # sampled from each step's prefix
    continuation_max_new_tokens: int | None = None  # none: max_new_tokens
    # "hard": 1 if any continuation reaches a verified-correct answer, else 0; "soft": the fraction that does
    label: Literal["hard", "soft"] = "hard"
    accuracy_reward: str | None = None  # the reward of the mix whose 1.0 means correct; none: the mix's first
    batch_size: int = 64  # sequences sampled together


class PRMTrainConfig(FinetuneConfig, DatasetSource):
    """`rlvf train-prm`: a process reward model (rlvf_prm.model: a causal LM with a scalar head, read after each
    word and number of a step; the step's score is the lowest read) trained with binary cross-entropy on per-step
    labels. `dataset`: rows with `prompt`, `steps` (a list of strings) and `labels` (one per step: 0/1,
    true/false or a float in [0, 1]); none: rows generated from the [task] (`rows`)."""

    output_dir: str = "runs/prm"
    lr: float = 1e-5
    eval_fraction: float = 0.2  # of the prompts, held out (without `eval_split`)
    limit: int | None = None  # training rows; none: all
    # what ends a step: generated completions are split into steps at it, and the PRM reads it after each step
    # (give the `prm` reward the same separator)
    separator: str = "\n"
    rows: PRMRowsConfig = PRMRowsConfig()


def _task_section_with_default(name: str):
    """The [task] section's type (the core's, as StageConfig declares it) with another default task."""
    section = StageConfig.model_fields["task"].annotation
    return section, section(name=name)


_TaskSection, _MULTISTEP_TASK = _task_section_with_default("multistep")


class PRMStageConfig(StageConfig):
    """`rlvf train-prm`."""

    task: _TaskSection = _MULTISTEP_TASK  # the task rows are generated from (a task with steps)
    prm: PRMTrainConfig = PRMTrainConfig()
