"""The plugin API: everything a plugin (a reward, a task, an environment, a stage or a command) may import from rlvf.

    from rlvf.api import hookimpl, completion_text, RewardError

What a stage plugin (a command with its own config section, e.g. rlvf-rm's `train-rm`) builds on:
- the command: `training_stage(name, help, schema, "package.module:run_stage", summary)` for a training stage
  (config file, overrides, --resume, and the before/after table come with it), or any
  `Command(name, help, run, schema=<its StageConfig subclass>)`, registered by the hook `register_commands`;
  `run(args)` gets the validated config in `args.config` and the registry in `args.registry`;
- config: `StageConfig` (a stage's schema: subclass it and add its sections), `Section`, and the sections to
  build them from: `ModelConfig`, `DatasetSource`, `FinetuneConfig`, `EvalConfig`, `PreferenceConfig`;
- models: `load_policy`, `load_tokenizer`, `pick_device_and_dtype`, `resolve_model`, `encode_prompts`;
- LoRA ([model] lora, rlvf.models.lora): `apply_lora` (adapters on a model a stage trains), `adapters_disabled` (the
  base model's forward: a reference with no second copy), `has_adapters`, `merged_weights`, `save_trained`
  (merged model + adapter/; `save_final` uses it), and the section `LoraConfig`;
- sampling: `build_sampler` (from the registry a command gets), `model_sampler`, `HFSampler`, `SamplingParams`;
- the supervised loop (rlvf.stages.supervised): `prepare_output_dir`, `check_batching`, `train_loop`,
  `save_final`, `task_evaluator`, and `print_stage_results` (what a stage command prints at the end);
- HTTP: `call_with_retries` / `acall_with_retries` with a `Retries` policy, `retryable_status`;
- rows and preference pairs: `load_rows_by_prompt`, `split_by_prompt`, `load_pairs`, `pair_metrics`;
- evaluation: `evaluate`, `CORRECT` (the score an accuracy reward gives a correct sample);
- servers: `bearer_headers`, `token_matches`, `require_token_off_loopback`, `JUDGE_TOKEN_ENV`.

Names resolve on first use, so `import rlvf.api` stays cheap (no torch) for reward workers. Anything else in
rlvf is internal and may change between versions; a plugin needing more asks for it to be declared here.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it
_EXPORTS = {
    "hookimpl": "rlvf.api.hookspecs", "Command": "rlvf.api.commands", "training_stage": "rlvf.api.commands",
    "ConfigError": "rlvf.errors", "PluginError": "rlvf.errors", "RewardError": "rlvf.errors",
    "completion_text": "rlvf.api.text", "final_turn_text": "rlvf.api.text", "reward_completions": "rlvf.api.text",
    "is_conversational": "rlvf.api.text", "last_boxed": "rlvf.api.text",
    "wrong_number": "rlvf.api.text", "with_final_answer_changed": "rlvf.api.text",
    "with_sign_dropped": "rlvf.api.text",
    "standalone_number": "rlvf.api.text",
    "Task": "rlvf.api.tasks", "DatasetTask": "rlvf.api.tasks", "fill_template": "rlvf.api.tasks",
    "is_messages": "rlvf.api.tasks", "split_held_out": "rlvf.api.tasks", "task_from_config": "rlvf.api.tasks",
    "Environment": "rlvf.api.environments", "Episode": "rlvf.api.environments",
    "Observation": "rlvf.api.environments", "EnvironmentContext": "rlvf.api.environments",
    "AuditRow": "rlvf.api.exploits", "ExploitFamily": "rlvf.api.exploits",
    "StepScores": "rlvf.api.rewards", "step_spans": "rlvf.api.rewards",
    "RewardMix": "rlvf.api.rewards", "MixResult": "rlvf.api.rewards", "mix_from_config": "rlvf.api.rewards",
    # for stages: config sections, models, sampling, the supervised loop, rows and pairs, evaluation, server auth
    "Section": "rlvf.config", "StageConfig": "rlvf.config", "ModelConfig": "rlvf.config",
    "DatasetSource": "rlvf.config", "FinetuneConfig": "rlvf.config", "EvalConfig": "rlvf.config",
    "PreferenceConfig": "rlvf.config", "LoraConfig": "rlvf.config",
    "load_policy": "rlvf.models.loading", "load_tokenizer": "rlvf.models.loading",
    "pick_device_and_dtype": "rlvf.models.loading", "encode_prompts": "rlvf.models.loading",
    "resolve_model": "rlvf.models.names",
    "apply_lora": "rlvf.models.lora", "adapters_disabled": "rlvf.models.lora", "has_adapters": "rlvf.models.lora",
    "merged_weights": "rlvf.models.lora", "save_trained": "rlvf.models.lora",
    "HFSampler": "rlvf.sampling", "SamplingParams": "rlvf.sampling",
    "build_sampler": "rlvf.sampling", "model_sampler": "rlvf.sampling", "Sampler": "rlvf.sampling",
    "Samples": "rlvf.sampling", "algorithm": "rlvf.algorithms", "AdvantageInputs": "rlvf.algorithms",
    "Advantages": "rlvf.algorithms", "BatchTotals": "rlvf.algorithms",
    "train_loop": "rlvf.stages.supervised", "save_final": "rlvf.stages.supervised",
    "prepare_output_dir": "rlvf.stages.supervised", "check_batching": "rlvf.stages.supervised",
    "task_evaluator": "rlvf.stages.supervised", "print_stage_results": "rlvf.commands",
    "load_pairs": "rlvf.stages.pairs", "load_rows_by_prompt": "rlvf.stages.pairs",
    "split_by_prompt": "rlvf.stages.pairs", "pair_metrics": "rlvf.stages.pairs",
    "verified_hard_negatives": "rlvf.stages.pairs",
    "evaluate": "rlvf.stages.evaluate", "CORRECT": "rlvf.stages.evaluate",
    "bearer_headers": "rlvf.engine.server_auth", "token_matches": "rlvf.engine.server_auth",
    "require_token_off_loopback": "rlvf.engine.server_auth", "JUDGE_TOKEN_ENV": "rlvf.engine.server_auth",
    "Retries": "rlvf.engine.http", "RetriesExhausted": "rlvf.engine.http", "call_with_retries": "rlvf.engine.http",
    "acall_with_retries": "rlvf.engine.http", "retryable_status": "rlvf.engine.http",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"rlvf.api has no '{name}' (the plugin API is: {', '.join(__all__)})")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
