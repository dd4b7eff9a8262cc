"""One TOML config for every command, validated with pydantic, with dotted command-line overrides.

    rlvf train run.toml train.lr=1e-6 task.name=gsm_symbolic

Unknown or ill-typed keys are rejected with the key's dotted path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from rlvf.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name: str = "smollm2-135m"  # a short name of an embedded model, a HF hub id or a local directory
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value):
        return {"name": value} if isinstance(value, str) else value


class RewardEntry(Section):
    reward: str | None = None  # the registered reward; defaults to the entry's key in the mix
    weight: float = 1.0
    on_error: Literal["raise", "zero"] = "raise"
    options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _from_weight(cls, value):
        return {"weight": value} if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class RewardConfig(Section):
    aggregation: Literal["sum", "normalize_then_sum"] = "sum"
    mix: dict[str, RewardEntry] = {}  # empty: the task's default rewards


class TaskConfig(Section):
    name: str = "arithmetic"
    options: dict[str, Any] = {}  # options of a registered task
    # A task declared from a `datasets` source instead of a registered one:
    dataset: str | None = None  # hub id, local directory, or a .jsonl/.json/.parquet/.csv file
    dataset_config: str | None = None
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    train_split: str = "train"
    eval_split: str | None = None  # none: hold out eval_fraction of the train split
    eval_fraction: float = 0.1
    columns: dict[str, str] = {}  # task column -> dataset column
    template: str | None = None  # e.g. "{question}"; overrides a registered task's template too
    system_prompt: str | None = None
    few_shot: list[tuple[str, str]] | None = None
    chat: bool | None = None
    rewards: dict[str, float] = {}  # default reward mix of a dataset task


class SamplingConfig(Section):
    sampler: Literal["hf"] = "hf"
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    stop: list[str] = []
    batch_size: int = 64  # sequences decoded together


class EvalConfig(Section):
    split: Literal["train", "eval"] = "eval"
    limit: int | None = None  # prompts; none: the whole split
    n: int = 1  # samples per prompt (pass@k needs n >= k)
    k: list[int] = [1]
    temperature: float = 0.0  # greedy unless n > 1 asks for samples
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 64
    accuracy_reward: str | None = None  # the reward whose 1.0 means "correct"; default: the mix's first


class AlgorithmConfig(Section):
    """Names of registry entries (rlvf.algorithms) and their options: the trainer knows no algorithm."""

    advantage: str = "grpo"
    advantage_options: dict[str, Any] = {}  # grpo: scale_std (false = Dr.GRPO), normalize = "group"|"batch"
    policy_loss: str = "clipped"
    policy_loss_options: dict[str, Any] = {}  # clipped: eps_low, eps_high (eps_high > eps_low: DAPO)
    loss_aggregation: str = "seq_mean"  # GRPO; "token_mean": DAPO; "constant_norm": Dr.GRPO
    kl_estimator: str = "k3"
    beta: float = 0.04  # KL coefficient; 0 loads no reference model
    kl_in: Literal["loss", "reward"] = "loss"  # add beta * KL to the loss, or subtract it from the reward


class TrainConfig(Section):
    steps: int = 20
    prompts_per_step: int = 8
    group_size: int = 8  # G completions per prompt
    epochs: int = 1  # mu: optimisation passes over each batch of rollouts
    mini_batch_size: int | None = None  # sequences per optimiser step; none: all of the step's
    micro_batch_size: int = 8  # sequences per forward/backward (gradient accumulation up to a mini-batch)
    lr: float = 1e-6
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0  # optimiser steps
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.99)
    max_grad_norm: float = 1.0
    mask_truncated: bool = False  # leave completions that hit max_new_tokens out of the loss
    dynamic_sampling: bool = False  # drop groups whose rewards are all equal (they carry no signal)
    gradient_checkpointing: bool = False
    output_dir: str = "runs/{task}"
    save_every: int = 10  # steps between checkpoints (0: only the final model)
    keep_checkpoints: int = 2
    eval_every: int = 0  # steps between held-out evaluations (0: only before and after training)
    eval_before: bool = True
    report_to: list[Literal["jsonl", "tensorboard", "wandb"]] = ["jsonl", "tensorboard"]
    progress: bool = True


class Config(Section):
    seed: int = 0
    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()
    reward: RewardConfig = RewardConfig()
    sampling: SamplingConfig = SamplingConfig()
    eval: EvalConfig = EvalConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    train: TrainConfig = TrainConfig()


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value); the value is read as TOML, else taken as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return [part.strip() for part in key.split(".")], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"override {text!r}: '{where}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                schema: type[BaseModel] = Config) -> BaseModel:
    """Read a TOML file (or nothing: all defaults), apply overrides, validate against `schema`."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    config = _validate(schema, data, source)
    if overrides:
        # Overrides apply to the validated file, so `reward.mix.math.weight=2` works on `math = 1.0` too.
        data = apply_overrides(config.model_dump(), overrides)
        config = _validate(schema, data, source + " + command-line overrides")
    return config


def _validate(schema: type[BaseModel], data: dict[str, Any], source: str) -> BaseModel:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        got = "" if error["type"] == "extra_forbidden" else f" (got {error.get('input')!r})"
        lines.append(f"  {key}: {message}{got}")
    return "\n".join(lines)
