"""One TOML config for every command, validated with pydantic, with dotted command-line overrides.

    rlvf train run.toml train.lr=1e-6 task.name=gsm_symbolic

Unknown or ill-typed keys are rejected with the key's dotted path.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from rlvf.algorithms.presets import ALGORITHM_PRESETS
from rlvf.errors import ConfigError

# Names a key may take, listed once: the code that acts on them reads them from here (typing.get_args).
Aggregation = Literal["sum", "normalize_then_sum"]  # how the reward mix combines its rewards
StepReduction = Literal["min", "last", "mean"]  # how a step reward (rlvf.api.StepScores) becomes one number
ParallelMode = Literal["none", "ddp", "fsdp"]  # how torchrun ranks hold the policy (rlvf.engine.distributed)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _loggers_installed(report_to: list[str]) -> list[str]:
    """W&B is optional: found missing before training starts, not at the first log line."""
    if "wandb" in report_to and importlib.util.find_spec("wandb") is None:
        raise ValueError("'wandb' needs the wandb package: pip install wandb (or drop it from report_to)")
    return report_to


class LoraConfig(Section):
    """LoRA adapters (peft, rlvf.models.lora) on the model a training stage trains (`rlvf train`, sft, dpo,
    train-rm, train-judge): W x + (alpha / r) B A x with W frozen; only the adapters train (and a reward model's
    score head, fully). The reference policy (algorithm.beta > 0, DPO) is the model with its adapters off, no
    second copy; checkpoints hold the adapters and optimizer state; the final model is saved merged (a plain HF
    directory), its adapters in final/adapter/; vLLM samplers get the merged weights. PPO: a critic with a
    decoder of its own (critic.init) trains fully; with critic.share_policy_backbone the value head trains fully
    and the shared adapters take the value loss too. With DDP, not with train.parallel = "fsdp". A higher lr than
    a full update's is usual (e.g. 10x)."""

    r: int = 16  # rank of A (r x in) and B (out x r)
    alpha: float = 32.0  # the update is scaled by alpha / r
    dropout: float = 0.0  # on the adapters' input, while training
    # the modules that get adapters: "all-linear" (every linear layer but the LM head), or names, e.g.
    # ["q_proj", "v_proj"] (a name matches a module whose name ends with it)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"

    @field_validator("r")
    @classmethod
    def _positive_rank(cls, value):
        if value < 1:
            raise ValueError("the rank r must be at least 1")
        return value

    @field_validator("dropout")
    @classmethod
    def _dropout_range(cls, value):
        if not 0.0 <= value < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        return value

    @field_validator("target_modules")
    @classmethod
    def _some_modules(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError('target_modules must name at least one module (or be "all-linear")')
        return value


class ModelConfig(Section):
    name: str = "smollm2-135m"  # a short name of an embedded model, a HF hub id or a local directory
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    # none: full fine-tuning; a table, even {} (or true), trains LoRA adapters ([model.lora]) in every training
    # stage; on the command line `model.lora={r = 8}`, `model.lora.r=8`, or JSON: `model.lora={"r": 8}`
    lora: LoraConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value):
        return {"name": value} if isinstance(value, str) else value

    @field_validator("lora", mode="before")
    @classmethod
    def _lora_switch(cls, value):
        if isinstance(value, bool):  # lora = true: the defaults; false: full fine-tuning
            return {} if value else None
        return value


class RewardEntry(Section):
    reward: str | None = None  # the registered reward; defaults to the entry's key in the mix
    weight: float = 1.0
    on_error: Literal["raise", "zero"] = "raise"
    options: dict[str, Any] = {}
    # a reward returning step scores (rlvf.api.StepScores): the one number the mix and group estimators see;
    # token estimators (reinforce_pp, gae) get the steps themselves on their tokens
    step_reduction: StepReduction = "min"

    @model_validator(mode="before")
    @classmethod
    def _from_weight(cls, value):
        return {"weight": value} if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class RayConfig(Section):
    """Where `reward.executor = "ray"` runs the rewards (rlvf.engine.executors): actors on a Ray cluster."""

    address: str | None = None  # "host:port" of a running cluster (`ray start --head`); none: RAY_ADDRESS, else a
    #                             local one started for the run
    actors: int = 1  # actors per reward, spread over the cluster's nodes; a batch is split between them
    num_cpus: float = 1.0  # CPUs each actor reserves (a `code` reward with workers = N: give it N)


class RewardConfig(Section):
    aggregation: Aggregation = "sum"
    mix: dict[str, RewardEntry] = {}  # empty: the task's default rewards
    executor: Literal["local", "ray"] = "local"  # "ray": each reward runs in Ray actors ([reward.ray])
    ray: RayConfig = RayConfig()


class DatasetSource(Section):
    """A `datasets` source of rows: a hub id, local directory or data file, with a held-out split."""

    dataset: str | None = None  # hub id, local directory, or a .jsonl/.json/.parquet/.csv file
    dataset_config: str | None = None
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    train_split: str = "train"
    eval_split: str | None = None  # none: hold out eval_fraction of the train split (of its prompts, for pairs)
    eval_fraction: float = 0.1
    columns: dict[str, str] = {}  # the rows' column -> dataset column


class TaskConfig(DatasetSource):
    """A registered task (`name`, `options`), or one declared from a `datasets` source (`dataset` set)."""

    name: str = "arithmetic"
    options: dict[str, Any] = {}  # options of a registered task
    template: str | None = None  # e.g. "{question}"; overrides a registered task's template too
    system_prompt: str | None = None
    few_shot: list[tuple[str, str]] | None = None
    chat: bool | None = None
    rewards: dict[str, float] = {}  # default reward mix of a dataset task
    # a multi-turn environment (rlvf.api.environments) the task's episodes run in, e.g. "python_tool"; none: one
    # completion per prompt (or the task's own default environment)
    environment: str | None = None
    environment_options: dict[str, Any] = {}  # its options, e.g. {max_turns = 3, max_tokens = 384}


class SamplingConfig(Section):
    # "vllm": a vLLM engine in the trainer's process (python -m rlvf.tools.vllm_install); "hf": rlvf's own decode
    # loop on the transformers model; "auto": vLLM if it is installed, else HF (the choice is printed); or a
    # sampler a plugin registers (`rlvf algorithms` lists the installed ones)
    sampler: str = "auto"
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    stop: list[str] = []
    batch_size: int = 64  # sequences decoded together (HF sampler; vLLM schedules its own batches)
    # vLLM's memory budget: the KV cache in GiB (none: 1 GiB on a CPU; on a GPU, what
    # vllm_gpu_memory_utilization leaves), and the fraction of GPU memory vLLM may take (the trainer needs the rest)
    vllm_kv_cache_gb: float | None = None
    vllm_gpu_memory_utilization: float = 0.3
    vllm_max_model_len: int | None = None  # none: the model's
    vllm_enforce_eager: bool | None = None  # none: eager on a CPU (compiling takes minutes), CUDA graphs on a GPU
    vllm_tensor_parallel_size: int = 1  # GPUs the engine splits the model over (vLLM's tensor_parallel_size)
    # A separate vLLM server (`rlvf vllm-serve MODEL`), e.g. "http://127.0.0.1:8000": sampling over its API, the
    # weights synced after each step through vllm_server_weights_dir, a directory the server reads at the same
    # path (none: a temporary directory, which works when the server runs on this machine)
    vllm_server: str | None = None
    vllm_server_weights_dir: str | None = None
    vllm_server_api_key: str | None = None  # the token `rlvf vllm-serve --api-key` requires; none: $RLVF_VLLM_API_KEY


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

    preset: str | None = None  # a name in ALGORITHM_PRESETS; keys given here replace the preset's
    advantage: str = "grpo"
    advantage_options: dict[str, Any] = {}  # grpo: scale_std (false = Dr.GRPO), normalize = "group"|"batch"
    policy_loss: str = "clipped"
    policy_loss_options: dict[str, Any] = {}  # clipped: eps_low, eps_high (eps_high > eps_low: DAPO)
    loss_aggregation: str = "seq_mean"  # GRPO; "token_mean": DAPO; "constant_norm": Dr.GRPO
    kl_estimator: str = "k3"
    beta: float = 0.04  # KL coefficient; 0 loads no reference model
    kl_in: Literal["loss", "reward"] = "loss"  # add beta * KL to the loss, or subtract it from the reward
    # Rewards returning step scores (rlvf.api.StepScores), for estimators on token rewards (reinforce_pp, gae):
    # "tokens": each step's weight x score on the token ending the step, in place of its reduction at the last
    # token; "reduce": only the reduction ([reward.mix.NAME] step_reduction), as group estimators always see it
    step_rewards: Literal["tokens", "reduce"] = "tokens"
    # Truncated importance sampling for a sampler whose log-probs differ from the trainer's (vLLM): each token's
    # policy loss is weighted by min(pi_trainer_old / pi_sampler, tis_cap); none: no correction
    tis_cap: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_preset_name(cls, value):
        return {"preset": value} if isinstance(value, str) else value

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value):
        if value is not None and value not in ALGORITHM_PRESETS:
            raise ValueError(f"unknown algorithm preset '{value}'; available: {', '.join(ALGORITHM_PRESETS)}")
        return value

    @model_validator(mode="after")
    def _apply_preset(self):
        # Keys the user did not give take the preset's value. Written around validate_assignment (the presets
        # are valid by construction) so they stay out of model_fields_set: a config dumped with exclude_unset
        # and validated again with another preset (an override) takes the new preset's values.
        for key, value in ALGORITHM_PRESETS.get(self.preset or "", {}).items():
            if key not in self.model_fields_set:
                self.__dict__[key] = copy.deepcopy(value)
        return self


class CriticConfig(Section):
    """The value model, built only when the advantage estimator needs values (gae, i.e. algorithm = "ppo")."""

    init: str = "policy"  # "policy": a copy of the policy's weights; else a causal LM or a reward model
    #                       (sequence classification: its score head initialises the value head) with the
    #                       policy's tokenizer: embedded name, HF hub id or local directory
    share_policy_backbone: bool = False  # a value head on the policy's own hidden states: no second model
    vf_coef: float = 0.1  # with share_policy_backbone: policy loss + vf_coef * value loss
    lr: float = 1e-5
    value_loss: str = "clipped"  # a VALUE_LOSSES entry
    value_clip: float = 0.2  # values move at most this far from the rollout's (a large value: plain MSE)


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
    save_every: int = 10  # steps between checkpoints (0: only the final model, and one at Ctrl-C)
    keep_checkpoints: int = 2  # the newest N checkpoints are kept (0: all); a 135M model's is ~1.6 GB
    # steps between samples of the step's completions (prompt, completion, each reward, the mix) written to
    # completions.jsonl and, with tensorboard, as text (0: off)
    log_completions_every: int = 10
    eval_every: int = 0  # steps between held-out evaluations (0: only before and after training)
    eval_before: bool = True
    report_to: list[Literal["jsonl", "tensorboard", "wandb"]] = ["jsonl", "tensorboard"]
    _check_report_to = field_validator("report_to")(_loggers_installed)
    progress: bool = True
    # Under torchrun (rlvf.engine.distributed): "ddp" replicates the policy on every rank, "fsdp" shards it
    # (FSDP2); each rank samples and scores its share of the step's prompts. "none": one process.
    parallel: ParallelMode = "none"


class FinetuneConfig(Section):
    """Optimisation settings shared by `rlvf sft`, `rlvf train-rm` and `rlvf dpo` (rlvf.stages.supervised)."""

    epochs: int = 1  # passes over the training examples (pairs for RM and DPO)
    max_steps: int | None = None  # optimiser steps; none: `epochs` passes
    batch_size: int = 16  # examples per optimiser step
    micro_batch_size: int = 8  # examples per forward/backward (gradient accumulation up to batch_size)
    lr: float = 1e-5
    lr_schedule: Literal["constant", "linear", "cosine"] = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    max_length: int = 1024  # tokens of prompt + completion; a longer prompt loses its beginning
    gradient_checkpointing: bool = False
    eval_limit: int | None = 200  # held-out examples evaluated; none: all
    eval_every: int = 0  # optimiser steps between held-out evaluations (0: only before and after)
    save_every: int = 50  # optimiser steps between checkpoints, for --resume (0: none, a killed run starts over)
    keep_checkpoints: int = 2  # the newest N checkpoints are kept (0: all)
    output_dir: str = "runs/finetune"  # metrics.jsonl, results.json and the final HF model in final/
    report_to: list[Literal["jsonl", "tensorboard", "wandb"]] = ["jsonl"]
    _check_report_to = field_validator("report_to")(_loggers_installed)
    progress: bool = True


class SFTConfig(FinetuneConfig, DatasetSource):
    """`rlvf sft`: demonstrations from a `datasets` source (prompt/completion or chat `messages` columns), or
    the [task]'s rows with `completion_template` filled from their columns."""

    output_dir: str = "runs/sft"
    completion_template: str | None = None  # with the [task]'s rows, e.g. "The answer is \\boxed{{answer}}."
    packing: bool = False  # several examples per row of a micro-batch (attention stays within each)
    eval_task: bool = False  # also report the [task]'s held-out accuracy ([eval]) before and after


class DPOConfig(FinetuneConfig):
    """`rlvf dpo`: DPO (or IPO) on [preference] pairs; the reference log-probs are computed once, up front."""

    output_dir: str = "runs/dpo"
    lr: float = 1e-6
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    beta: float = 0.1
    label_smoothing: float = 0.0  # sigmoid loss only: the assumed fraction of flipped labels (cDPO)
    reference: str | None = None  # the reference model; none: the policy's own weights before training
    kl_prompts: int = 32  # held-out prompts sampled after training to estimate KL(policy || reference)
    kl_max_new_tokens: int = 64
    eval_task: bool = False  # also report the [task]'s held-out accuracy ([eval]) before and after


class PreferenceConfig(DatasetSource):
    """Preference pairs for `rlvf train-rm` and `rlvf dpo`: any `datasets` source with prompt / chosen /
    rejected (text or chat messages), e.g. a file written by `rlvf pairs`."""

    limit: int | None = None  # training pairs; none: all


class PairsConfig(Section):
    """`rlvf pairs`: sample the [model] on the [task], pair a verified-correct completion (chosen) with an
    incorrect one (rejected) of the same prompt."""

    split: Literal["train", "eval"] = "train"
    limit: int | None = 200  # prompts; none: the whole split
    n: int = 8  # samples per prompt
    pairs_per_prompt: int = 1
    # Per distinct verified-correct sample, pairs whose rejected side is that sample with only its final answer
    # changed (rlvf.api.with_final_answer_changed): the reward model must check the answer, not the style.
    hard_negatives: int = 0
    # With hard negatives, a right sample whose final answer is negative also against itself with the minus sign
    # dropped (`0 - 6 = 6`): same-shape wrong answers never show that slip, and an RM trained without these pairs
    # preferred the dropped sign on 43 of 45 negative answers (README, RLHF).
    sign_dropped: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 64


# --- one schema per stage, over a shared base ---
# A stage validates the sections it reads. A config file may also hold other stages' sections (examples/rlhf/
# rm.toml serves `rlvf pairs` and `rlvf train-rm`): those are left to their own stage (load_config).

class StageConfig(Section):
    """What every stage reads: the model, the task and its rewards, sampling and evaluation."""

    seed: int = 0
    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()
    reward: RewardConfig = RewardConfig()
    sampling: SamplingConfig = SamplingConfig()
    eval: EvalConfig = EvalConfig()


class RLConfig(StageConfig):
    """`rlvf train`."""

    algorithm: AlgorithmConfig = AlgorithmConfig()
    critic: CriticConfig = CriticConfig()
    train: TrainConfig = TrainConfig()


class SFTStageConfig(StageConfig):
    """`rlvf sft`."""

    sft: SFTConfig = SFTConfig()


class PairsStageConfig(StageConfig):
    """`rlvf pairs`."""

    preference: PreferenceConfig = PreferenceConfig()
    pairs: PairsConfig = PairsConfig()


class DPOStageConfig(StageConfig):
    """`rlvf dpo`."""

    preference: PreferenceConfig = PreferenceConfig()
    dpo: DPOConfig = DPOConfig()


def combined_schema(schemas: list[type[StageConfig]], name: str = "Config") -> type[StageConfig]:
    """One schema holding every section of `schemas` (the first schema to declare a section gives its type)."""
    from pydantic import create_model

    fields: dict[str, Any] = {}
    for schema in schemas:
        for key, field in schema.model_fields.items():
            fields.setdefault(key, (field.annotation, field))
    return create_model(name, __base__=Section, **fields)


# Every section of the core's stages: what `load_config` validates when no stage is named (library use, tests).
Config = combined_schema([RLConfig, SFTStageConfig, PairsStageConfig, DPOStageConfig])


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value); the value is read as TOML, else as a JSON object (`{"r": 8}`,
    what a program writes with json.dumps), else taken as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = _json_object(raw)
    return [part.strip() for part in key.split(".")], value


def _json_object(raw: str) -> Any:
    """A JSON object's dict, or `raw` itself if it is not one."""
    if raw.lstrip().startswith("{"):
        try:
            value = json.loads(raw)
        except ValueError:
            return raw
        return value if isinstance(value, dict) else raw
    return raw


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
                schema: type[BaseModel] = Config, other_sections: set[str] | frozenset[str] = frozenset()
                ) -> BaseModel:
    """Read a TOML file (or nothing: all defaults), apply overrides, validate against `schema`.

    `other_sections`: sections of other stages that the file may hold; they are dropped unread (their stage
    validates them). A section no stage knows is an error, as is any unknown key in `schema`'s sections."""
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
    ignored = set(other_sections) - set(schema.model_fields)
    config = _validate(schema, _without(data, ignored), source)
    if overrides:
        # Overrides apply to the validated file, so `reward.mix.math.weight=2` works on `math = 1.0` too; keys the
        # file did not set stay unset, so `algorithm.preset=ppo` sets what the preset sets.
        data = apply_overrides(config.model_dump(exclude_unset=True), overrides)
        config = _validate(schema, _without(data, ignored), source + " + command-line overrides")
    return config


def _without(data: dict[str, Any], sections: set[str]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key not in sections or not isinstance(value, dict)}


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
