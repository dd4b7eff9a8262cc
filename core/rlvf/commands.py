"""The core's `rlvf` commands, registered through the `register_commands` hook like any plugin's (entry point
`builtin-commands` of the rlvf distribution). Each prints; the work is in rlvf.stages and rlvf.tools, and heavy
imports happen inside the commands. Every `run(args)` finds the plugin registry in `args.registry`."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, get_args

from rlvf.api.commands import Command, training_stage
from rlvf.api.hookspecs import hookimpl
from rlvf.config import Aggregation
from rlvf.errors import ConfigError
from rlvf.tools.table import format_table

REFERENCE = "examples/CONFIG.md, or `rlvf config --reference`"


def load_stage_config(args, schema):
    """A command's config: `schema`'s sections of the file `args.config` plus `args.overrides`; the sections of
    other commands' schemas (plugin stages' too) are left to them."""
    from rlvf.config import load_config
    from rlvf.config_docs import every_stage_schema

    return load_config(args.config, args.overrides, schema=schema,
                       other_sections=set(every_stage_schema(args.registry).model_fields))


def cmd_plugins(args) -> None:
    plugins = sorted(args.registry.plugins.values(), key=lambda p: (p.distribution, p.name))
    if args.json:
        print(json.dumps([
            {"name": p.name, "distribution": p.distribution, "version": p.version, "entry_point": p.entry_point,
             "rewards": p.rewards, "tasks": p.tasks, "environments": p.environments, "algorithms": p.algorithms,
             "samplers": p.samplers,
             "commands": p.commands, "exploits": p.exploits} for p in plugins], indent=2))
        return
    if not plugins:
        print("no rlvf plugins installed")
        return
    print(format_table(["distribution", "version", "entry point", "rewards", "tasks", "environments", "algorithms",
                        "samplers", "commands", "exploit families"],
                       [[p.distribution, p.version, p.entry_point, *(", ".join(names) or "-" for names in
                         (p.rewards, p.tasks, p.environments, p.algorithms, p.samplers, p.commands, p.exploits))]
                        for p in plugins]))


def cmd_rewards(args) -> None:
    rewards = sorted(args.registry.rewards.values(), key=lambda r: r.name)
    if args.json:
        print(json.dumps([{"name": r.name, "plugin": r.plugin, "description": r.description,
                           "options": r.options()} for r in rewards], indent=2, default=repr))
        return
    print(format_table(["reward", "plugin", "options", "description"],
                       [[r.name, r.plugin, ", ".join(f"{k}={v!r}" for k, v in r.options().items()) or "-",
                         r.description] for r in rewards]))


def cmd_algorithms(args) -> None:
    from rlvf.algorithms.presets import ALGORITHM_PRESETS

    registry = args.registry
    print(format_table(["registry", "entries"], [[kind, ", ".join(names)]
                                                 for kind, names in registry.algorithms.describe().items()]))
    print()
    print(format_table(["sampler (sampling.sampler = NAME)", "plugin", "description"],
                       [[s.name, s.plugin, s.description] for s in sorted(registry.samplers.values(),
                                                                          key=lambda s: s.name)]))
    print()
    print(format_table(["preset (algorithm = NAME)", "sets"],
                       [[name, ", ".join(f"{k} = {v!r}" for k, v in settings.items()) or "(the defaults)"]
                        for name, settings in ALGORITHM_PRESETS.items()]))


def cmd_tasks(args) -> None:
    registry = args.registry
    if args.name or args.task_config:  # show some rows of one task: a registered one, or the [task] of a config
        from rlvf.api.tasks import task_from_config
        from rlvf.config import TaskConfig, load_config

        if args.task_config:
            task_config = load_config(args.task_config, []).task
            if args.name and args.name != task_config.name:
                raise ConfigError(f"{args.task_config} declares task '{task_config.name}', not '{args.name}'; "
                                  f"drop the name or --config")
        else:
            task_config = TaskConfig(name=args.name)
        task = task_from_config(task_config, registry)
        for row in task.rows(args.split, limit=args.limit):
            print(json.dumps(row, ensure_ascii=False, default=str))
        return
    tasks = sorted(registry.tasks.values(), key=lambda t: t.name)
    if args.json:
        print(json.dumps([{"name": t.name, "plugin": t.plugin, "description": t.description,
                           "default_rewards": t.default_rewards, "options": t.options} for t in tasks], indent=2))
        return
    print(format_table(["task", "plugin", "default rewards", "description"],
                       [[t.name, t.plugin, ", ".join(f"{k}:{v:g}" for k, v in t.default_rewards.items()),
                         t.description] for t in tasks]))


def _parse_reward_flag(text: str) -> tuple[str, float]:
    """NAME, NAME:WEIGHT, or a reference FILE.py:FUNCTION / MODULE:FUNCTION, optionally with :WEIGHT."""
    name, _, weight = text.rpartition(":")
    try:
        return (name, float(weight)) if name else (text, 1.0)
    except ValueError:
        if weight.isidentifier() and (name.endswith(".py") or "." in name):  # FILE.py:FN or PKG.MODULE:FN
            return text, 1.0
        raise ConfigError(f"--reward {text!r}: the weight after ':' must be a number") from None


def open_text(path: Path, mode: str = "r"):
    """A file, or stdin/stdout for '-'."""
    if str(path) == "-":
        return contextlib.nullcontext(sys.stdin if mode == "r" else sys.stdout)
    if mode != "r":
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return open(path, mode, encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"input file {path} does not exist") from None


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) for each non-blank line; a malformed row is an error naming its line."""
    from rlvf.api.tasks import jsonl_rows

    rows = []
    with open_text(path) as handle:
        for number, row in jsonl_rows(path, handle):
            missing = [key for key in required if key not in row]
            if missing:
                raise ConfigError(f"{path}:{number}: row has no {', '.join(map(repr, missing))} field "
                                  f"(it has {', '.join(sorted(row)) or 'none'})")
            rows.append((number, row))
    return rows


def cmd_score(args) -> None:
    from rlvf.api.rewards import mix_from_config
    from rlvf.config import RewardEntry, StageConfig
    from rlvf.stages.score import score_rows

    config = load_stage_config(args, StageConfig)
    if args.reward:
        config.reward.mix = {name: RewardEntry(weight=weight) for name, weight in map(_parse_reward_flag, args.reward)}
    if args.aggregation:
        config.reward.aggregation = args.aggregation
    if args.on_error:
        for entry in config.reward.mix.values():
            entry.on_error = args.on_error
    mix = mix_from_config(config.reward, args.registry)
    rows = read_jsonl(args.input, required=("completion",))
    with open_text(args.output, "w") as output:
        totals = score_rows(mix, rows, output, batch_size=args.batch_size, source=str(args.input))
    print(format_table(["reward", "weight", "mean", "min", "max", "scored", "n/a", "failures", "retries"],
                       totals.summary(mix)), file=sys.stderr)
    print(f"{len(rows)} rows scored -> {args.output}", file=sys.stderr)


def _sampler(registry, config, policy, batch_size: int):
    """The [sampling] section's sampler for a command that samples a policy (eval, pairs), announced."""
    from rlvf.sampling import build_sampler

    sampler = build_sampler(registry, config.sampling, policy.model, policy.tokenizer, path=policy.path,
                            seed=config.seed, batch_size=batch_size)
    print(f"sampler: {sampler.description}", file=sys.stderr, flush=True)
    return sampler


def cmd_eval(args) -> None:
    from rlvf.api.rewards import check_task_columns, mix_from_config
    from rlvf.api.tasks import task_from_config
    from rlvf.config import StageConfig
    from rlvf.models.loading import load_policy
    from rlvf.stages.evaluate import evaluate

    config = load_stage_config(args, StageConfig)
    registry = args.registry
    task = task_from_config(config.task, registry)
    mix = mix_from_config(config.reward, registry, task.default_rewards)
    check_task_columns(mix, task, split=config.eval.split)  # bad rows are refused before the model loads
    policy = load_policy(config.model, path=args.model)
    sampler = _sampler(registry, config, policy, config.eval.batch_size)
    report = evaluate(policy.model, policy.tokenizer, task, mix, config.eval, seed=config.seed, sampler=sampler)
    if args.output:
        with open_text(args.output, "w") as output:
            for row in report.rows:
                output.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    print(format_table(["metric", "value"], [[k, f"{v:.4f}"] for k, v in report.summary().items()]))
    print(f"{task.name} / {config.eval.split}: {report.prompts} prompts, {report.samples} samples, "
          f"model {policy.path}, sampler {sampler.name}")


def cmd_config(args) -> None:
    from rlvf.config_docs import every_stage_schema, reference_markdown, to_toml

    schema = every_stage_schema(args.registry)
    if args.reference:  # examples/CONFIG.md
        print(reference_markdown(schema))
        return
    print(to_toml(load_stage_config(args, schema).model_dump(), schema), end="")


def cmd_init(args) -> None:
    from rlvf.config_docs import starter_config

    task = args.registry.task(args.task)
    text = starter_config(task.name, task.default_rewards)
    if str(args.output) == "-":
        print(text, end="")
        return
    if args.output.exists() and not args.force:
        raise ConfigError(f"{args.output} already exists; pass --force to overwrite it, or --output another file")
    args.output.write_text(text)
    print(f"wrote {args.output} (task '{task.name}', rewards {task.default_rewards}); run it with: "
          f"rlvf train {args.output}")


def _dry_run(config, registry) -> None:
    """What `rlvf train` would do, checked as far as it can be without loading the model."""
    from rlvf.api.rewards import mix_from_config
    from rlvf.api.tasks import task_from_config
    from rlvf.config_docs import to_toml
    from rlvf.models.names import EMBEDDED_MODELS, resolve_model

    print(to_toml(config.model_dump()))
    task = task_from_config(config.task, registry)
    mix = mix_from_config(config.reward, registry, task.default_rewards)
    train_rows, eval_rows = len(task.rows("train")), len(task.rows("eval"))
    model = config.model.name if config.model.name in EMBEDDED_MODELS else resolve_model(config.model.name)
    t = config.train
    print(f"# would run: {t.steps} steps x {t.prompts_per_step} prompts x {t.group_size} completions of "
          f"task '{task.name}' ({train_rows} train rows, {eval_rows} eval rows); rewards "
          f"{', '.join(f'{e.name} x{e.weight:g}' for e in mix.entries)} ({mix.aggregation}); algorithm "
          f"{config.algorithm.preset or config.algorithm.advantage}; model {model}; sampler "
          f"{config.sampling.sampler}; output {t.output_dir.format(task=task.name)}")


def cmd_train(args) -> None:
    from rlvf.stages.rl import Trainer

    config = args.config
    if args.dry_run:
        _dry_run(config, args.registry)
        return
    trainer = None
    try:
        trainer = Trainer(config, args.registry, resume=args.resume or args.force_resume,
                          force_resume=args.force_resume)
        results = trainer.run()
    except KeyboardInterrupt as exc:  # Ctrl-C: one line, exit status 130 (the last checkpoint is whole)
        import shlex

        again = shlex.join(["rlvf", "train", *([args.config_path] if args.config_path else []), *args.overrides,
                            "--resume"])
        if trainer is None:
            print(f"\ninterrupted before training started; run again with {again}", file=sys.stderr)
        else:
            step = getattr(exc, "step", trainer.step)
            saved = ("checkpoint saved" if trainer.last_checkpoint == step else "no checkpoint yet: a resume "
                     "starts over" if trainer.last_checkpoint is None else f"last checkpoint: step "
                     f"{trainer.last_checkpoint}")
            print(f"\ninterrupted at step {step} ({saved}); resume with {again}", file=sys.stderr)
        raise SystemExit(130) from None
    trainer.dist.close()
    if not trainer.dist.is_main:  # under torchrun, rank 0 reports
        return
    print_stage_results(results, [], "final model")
    print(f"metrics: {trainer.output_dir / 'metrics.jsonl'}")


def print_stage_results(results: dict[str, Any], summary: list[str], saved_as: str) -> None:
    """What a training stage prints at the end: its summary lines, the held-out before/after table, and where the
    model went (`results`: "before", "after" and "final_model", as rlvf.stages.supervised.train_loop returns)."""
    if summary:
        print("\n".join(summary))
    before, after = results.get("before") or {}, results["after"]
    rows = [[key, f"{before[key]:.4f}" if key in before else "-", f"{value:.4f}"] for key, value in after.items()]
    print(format_table(["held-out metric", "before", "after"], rows))
    print(f"{saved_as}: {results['final_model']}")


def cmd_pairs(args) -> None:
    from rlvf.api.rewards import mix_from_config
    from rlvf.api.tasks import task_from_config
    from rlvf.config import PairsStageConfig
    from rlvf.models.loading import load_policy
    from rlvf.stages.pairs import generate_pairs

    config = load_stage_config(args, PairsStageConfig)
    registry = args.registry
    task = task_from_config(config.task, registry)
    mix = mix_from_config(config.reward, registry, task.default_rewards)
    policy = load_policy(config.model, path=args.model)
    sampler = _sampler(registry, config, policy, config.pairs.batch_size)
    pairs, stats = generate_pairs(policy.model, policy.tokenizer, task, mix, config.pairs,
                                  accuracy_reward=config.eval.accuracy_reward, seed=config.seed, sampler=sampler)
    with open_text(args.output, "w") as output:
        for pair in pairs:
            output.write(json.dumps(pair, ensure_ascii=False, default=str) + "\n")
    print(format_table(["pairs", "value"], [[k, f"{v:.4f}" if isinstance(v, float) else str(v)]
                                            for k, v in stats.items()]), file=sys.stderr)
    print(f"{task.name} / {config.pairs.split}: {len(pairs)} pairs -> {args.output} (model {policy.path})",
          file=sys.stderr)


def cmd_plot(args) -> None:
    from rlvf.tools.plot import plot_run

    for path in plot_run(Path(args.run_dir)):
        print(path)


def cmd_new_plugin(args) -> None:
    from rlvf.tools.scaffold import write_plugin

    directory = write_plugin(args.name, Path(args.directory), environment=args.environment)
    print(f"wrote {directory}\ninstall it with: pip install -e {directory}\nthen check: rlvf plugins")


def cmd_model(args) -> None:
    from rlvf.models.names import resolve_model

    print(resolve_model(args.name))


def cmd_vllm_serve(args) -> None:
    import os

    from rlvf.engine.server_auth import VLLM_TOKEN_ENV, require_token_off_loopback
    from rlvf.models.names import resolve_model
    from rlvf.sampling import vllm_missing, vllm_serve_command

    token = args.api_key or os.environ.get(VLLM_TOKEN_ENV) or None
    require_token_off_loopback(args.host, token, "rlvf vllm-serve",
                               f"--api-key TOKEN or {VLLM_TOKEN_ENV}=TOKEN, and the same in the trainer's "
                               "environment or sampling.vllm_server_api_key")
    if missing := vllm_missing():
        raise ConfigError(missing)
    command, environment = vllm_serve_command(resolve_model(args.model), port=args.port, host=args.host,
                                              dtype=args.dtype, kv_cache_gb=args.kv_cache_gb, extra=args.passthrough,
                                              token=token)
    print(" ".join(command), file=sys.stderr, flush=True)  # the token travels in the environment, not here
    os.execve(command[0], command, environment)




# --- the arguments of each command (the stage arguments of train, sft and dpo come from rlvf.cli) ---

def _json_flag(parser) -> None:
    parser.add_argument("--json", action="store_true")


def _tasks_arguments(sub) -> None:
    sub.add_argument("name", nargs="?", help="print rows of this task as JSONL")
    sub.add_argument("--config", dest="task_config", metavar="CONFIG",
                     help="print rows of the [task] this config declares (dataset tasks too)")
    sub.add_argument("--split", default="eval", choices=["train", "eval"])
    sub.add_argument("--limit", type=int, default=5)
    sub.add_argument("--json", action="store_true")


def _score_arguments(sub) -> None:
    sub.add_argument("config", nargs="?", help="TOML config whose [reward] section defines the mix")
    sub.add_argument("overrides", nargs="*", help="dotted overrides, e.g. reward.aggregation=normalize_then_sum")
    sub.add_argument("--reward", action="append", metavar="NAME[:WEIGHT]", help="a reward in the mix (repeat)")
    sub.add_argument("--aggregation", choices=get_args(Aggregation))
    sub.add_argument("--on-error", choices=["raise", "zero"], help="failure policy for every reward")
    sub.add_argument("--input", required=True, type=Path, help="JSONL rows with 'completion' (and 'prompt', "
                     "plus the columns the rewards read); '-' for stdin")
    sub.add_argument("--output", default="-", type=Path, help="JSONL output (default: stdout)")
    sub.add_argument("--batch-size", type=int, default=64)


def _eval_arguments(sub) -> None:
    sub.add_argument("config", nargs="?", help="TOML config ([model], [task], [reward], [eval])")
    sub.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.n=8 eval.k=[1,8]")
    sub.add_argument("--model", help="a model directory or checkpoint instead of [model].name")
    sub.add_argument("--output", type=Path, help="write the scored completions here (JSONL)")


def _train_arguments(sub) -> None:
    sub.add_argument("--dry-run", action="store_true",
                     help="print the resolved config and what would run (task rows, rewards, model), then stop")


def _init_arguments(sub) -> None:
    sub.add_argument("task", nargs="?", default="arithmetic", help="a task name (`rlvf tasks` lists them)")
    sub.add_argument("--output", "-o", type=Path, default=Path("rlvf.toml"), help="where to write it ('-': stdout)")
    sub.add_argument("--force", action="store_true", help="overwrite an existing file")


def _config_arguments(sub) -> None:
    sub.add_argument("config", nargs="?", help="TOML config")
    sub.add_argument("overrides", nargs="*", help="dotted overrides")
    sub.add_argument("--reference", action="store_true", help="print every key with its type, default and meaning")
    sub.epilog = f"config keys: {REFERENCE}"


def _pairs_arguments(sub) -> None:
    sub.add_argument("config", nargs="?", help="TOML config ([model], [task], [reward], [pairs])")
    sub.add_argument("overrides", nargs="*", help="dotted overrides, e.g. pairs.n=8 pairs.limit=100")
    sub.add_argument("--output", required=True, type=Path, help="JSONL of prompt/chosen/rejected ('-': stdout)")
    sub.add_argument("--model", help="a model directory or checkpoint instead of [model].name")


def _new_plugin_arguments(sub) -> None:
    sub.add_argument("name", help="short name, e.g. 'toxicity' -> package rlvf-toxicity")
    sub.add_argument("--directory", default=".", help="where to create the package folder")
    sub.add_argument("--environment", action="store_true", help="a multi-turn environment (a calculator tool) "
                     "instead of a reward")


def _vllm_serve_arguments(sub) -> None:
    sub.add_argument("model", nargs="?", default="smollm2-135m", help="model name, HF id or directory")
    sub.add_argument("--port", type=int, default=8000)
    sub.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    sub.add_argument("--dtype", default="auto", help="auto: the trainer's (bfloat16 on a GPU, float32 on a CPU)")
    sub.add_argument("--kv-cache-gb", type=float, help="KV cache size (default on a CPU: 1 GiB)")
    sub.add_argument("--api-key", help="a token every request must carry, on every path (default: "
                     "$RLVF_VLLM_API_KEY); required to listen beyond loopback")
    sub.set_defaults(passthrough_ok=True)  # after `--`: more `vllm serve` options, e.g. -- --tensor-parallel-size 4


@hookimpl
def register_commands(register):
    from rlvf.audit.command import add_audit_arguments, cmd_audit
    from rlvf.config import DPOStageConfig, RLConfig, SFTStageConfig  # loaded already by rlvf.api.rewards

    register(Command("plugins", "list installed plugins and what they provide", cmd_plugins, _json_flag))
    register(Command("rewards", "list available rewards with their options", cmd_rewards, _json_flag))
    register(Command("algorithms", "list the algorithm registries, samplers and presets ([algorithm] config keys)",
                     cmd_algorithms))
    register(Command("tasks", "list available tasks, or print rows of one", cmd_tasks, _tasks_arguments))
    register(Command("score", "score prompt/completion rows (JSONL) with a reward mix", cmd_score, _score_arguments))
    register(Command("eval", "pass@1 / pass@k of a model on a task's split, scored with the reward mix", cmd_eval,
                     _eval_arguments))
    register(Command("audit", "red-team the reward mix: score exploit completions built from task rows (hedges, "
                     "echoes, notes to the grader, ...) and flag those scoring above wrong answers", cmd_audit,
                     add_audit_arguments))
    register(Command("train", "train a policy with RL (GRPO and friends) on a task and a reward mix", cmd_train,
                     _train_arguments, schema=RLConfig))
    register(training_stage(
        "sft", "supervised fine-tuning on demonstrations (loss on completion tokens only)", SFTStageConfig,
        "rlvf.stages.sft:run_sft", lambda r: [
            f"{r['train_examples']} demonstrations, {r['steps']} optimiser steps; held-out: completion loss per "
            f"token on {r['eval_examples']} demonstrations"]))
    register(training_stage(
        "dpo", "direct preference optimisation (DPO or IPO) on preference pairs", DPOStageConfig,
        "rlvf.stages.dpo:run_dpo", lambda r: [
            f"{r['train_pairs']} training pairs, {r['steps']} optimiser steps; held-out: {r['eval_pairs']} pairs "
            "(rewards/*: implicit rewards beta * log pi/pi_ref)"]))
    register(Command("init", "write a commented starter config for `rlvf train` on a task", cmd_init,
                     _init_arguments))
    register(Command("config", "print a config resolved (file + overrides + defaults) as TOML", cmd_config,
                     _config_arguments))
    register(Command("pairs", "sample a model on a task and write verified preference pairs (JSONL)", cmd_pairs,
                     _pairs_arguments))
    register(Command("plot", "write PNG curves (reward, accuracy, KL, length) of a training run", cmd_plot,
                     lambda sub: sub.add_argument("run_dir")))
    register(Command("new-plugin", "write a ready-to-install reward plugin package", cmd_new_plugin,
                     _new_plugin_arguments))
    register(Command("vllm-serve", "start a vLLM server that `sampling.vllm_server` can sample from and sync weights "
                     "into; options after `--` go to `vllm serve`", cmd_vllm_serve, _vllm_serve_arguments))
    register(Command("model", "resolve a model name to a local directory (converting an embedded model once)",
                     cmd_model, lambda sub: sub.add_argument("name", nargs="?", default="smollm2-135m")))
