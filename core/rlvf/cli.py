"""The `rlvf` command line. Each command is a small function; heavy imports happen inside them."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from rlvf.errors import ConfigError, RewardError, RlvfError
from rlvf.tools.table import format_table


def _registry():
    from rlvf.plugins import get_registry

    return get_registry()


def cmd_plugins(args) -> None:
    registry = _registry()
    plugins = sorted(registry.plugins.values(), key=lambda p: p.distribution)
    if args.json:
        print(json.dumps([
            {"name": p.name, "distribution": p.distribution, "version": p.version, "entry_point": p.entry_point,
             "rewards": p.rewards, "tasks": p.tasks} for p in plugins], indent=2))
        return
    if not plugins:
        print("no rlvf plugins installed")
        return
    print(format_table(["distribution", "version", "entry point", "rewards", "tasks"],
                       [[p.distribution, p.version, p.entry_point, ", ".join(p.rewards) or "-",
                         ", ".join(p.tasks) or "-"] for p in plugins]))


def cmd_rewards(args) -> None:
    rewards = sorted(_registry().rewards.values(), key=lambda r: r.name)
    if args.json:
        print(json.dumps([{"name": r.name, "plugin": r.plugin, "description": r.description,
                           "options": r.options()} for r in rewards], indent=2, default=repr))
        return
    print(format_table(["reward", "plugin", "options", "description"],
                       [[r.name, r.plugin, ", ".join(f"{k}={v!r}" for k, v in r.options().items()) or "-",
                         r.description] for r in rewards]))


def cmd_algorithms(args) -> None:
    from rlvf.algorithms import describe
    from rlvf.config import ALGORITHM_PRESETS

    print(format_table(["registry", "entries"], [[kind, ", ".join(names)] for kind, names in describe().items()]))
    print()
    print(format_table(["preset (algorithm = NAME)", "sets"],
                       [[name, ", ".join(f"{k} = {v!r}" for k, v in settings.items()) or "(the defaults)"]
                        for name, settings in ALGORITHM_PRESETS.items()]))


def cmd_tasks(args) -> None:
    registry = _registry()
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
    from rlvf.config import RewardEntry, load_config

    config = load_config(args.config, args.overrides)
    if args.reward:
        config.reward.mix = {name: RewardEntry(weight=weight) for name, weight in map(_parse_reward_flag, args.reward)}
    if args.aggregation:
        config.reward.aggregation = args.aggregation
    if args.on_error:
        for entry in config.reward.mix.values():
            entry.on_error = args.on_error
    mix = mix_from_config(config.reward, _registry())
    rows = read_jsonl(args.input, required=("completion",))
    present = {key for _, row in rows for key in row}  # a row without a column scores None ("does not apply")
    for entry in mix.entries:  # but a column a reward declares it needs must be in some row, before any is called
        missing = [column for column in entry.needed_columns() if column not in present]
        if missing and rows:
            raise ConfigError(f"reward '{entry.name}' needs column '{missing[0]}', which no row of {args.input} has "
                              f"(they have: {', '.join(sorted(present))})")

    totals: dict[str, list[float | None]] = {name: [] for name in [*mix.names, "reward"]}
    failures = dict.fromkeys(mix.names, 0)
    retries = dict.fromkeys(mix.names, 0)
    with open_text(args.output, "w") as output:
        for start in range(0, len(rows), args.batch_size):
            batch = rows[start: start + args.batch_size]
            data = [row for _, row in batch]
            keys = {key for row in data for key in row} - {"prompt", "completion"}
            columns = {key: [row.get(key) for row in data] for key in sorted(keys)}
            try:
                result = mix.score([row.get("prompt", "") for row in data], [row["completion"] for row in data],
                                   **columns)
            except RewardError as exc:
                where = f"{args.input}:{batch[exc.sample][0]}: " if exc.sample is not None else ""
                raise RewardError(f"{where}{exc}") from exc
            for i, row in enumerate(data):
                scored = {**row, **{name: values[i] for name, values in result.per_reward.items()},
                          "reward": result.total[i]}
                output.write(json.dumps(scored, ensure_ascii=False) + "\n")
                for name, values in result.per_reward.items():
                    totals[name].append(values[i])
                totals["reward"].append(result.total[i])
            for name, count in result.failures.items():
                failures[name] += count
            for name, count in result.retries.items():
                retries[name] += count
            output.flush()

    weights = {entry.name: entry.weight for entry in mix.entries}
    summary = []
    for name, values in totals.items():
        scored = [v for v in values if v is not None]
        summary.append([name, f"{weights[name]:g}" if name in weights else mix.aggregation,
                        f"{sum(scored) / len(scored):.4f}" if scored else "-",
                        f"{min(scored):.4f}" if scored else "-", f"{max(scored):.4f}" if scored else "-",
                        len(scored), len(values) - len(scored), failures.get(name, "-"), retries.get(name, "-")])
    print(format_table(["reward", "weight", "mean", "min", "max", "scored", "n/a", "failures", "retries"], summary),
          file=sys.stderr)
    print(f"{len(rows)} rows scored -> {args.output}", file=sys.stderr)


def _sampler(config, policy, batch_size: int):
    """The [sampling] section's sampler for a command that samples a policy (eval, pairs), announced."""
    from rlvf.sampling import sampler_from_config

    sampler = sampler_from_config(config.sampling, policy.model, policy.tokenizer, path=policy.path, seed=config.seed,
                                  batch_size=batch_size)
    print(f"sampler: {sampler.description}", file=sys.stderr, flush=True)
    return sampler


def cmd_eval(args) -> None:
    from rlvf.api.rewards import check_task_columns, mix_from_config
    from rlvf.api.tasks import task_from_config
    from rlvf.config import load_config
    from rlvf.models.loading import load_policy
    from rlvf.stages.evaluate import evaluate

    config = load_config(args.config, args.overrides)
    registry = _registry()
    task = task_from_config(config.task, registry)
    mix = mix_from_config(config.reward, registry, task.default_rewards)
    check_task_columns(mix, task, split=config.eval.split)  # bad rows are refused before the model loads
    policy = load_policy(config.model, path=args.model)
    sampler = _sampler(config, policy, config.eval.batch_size)
    report = evaluate(policy.model, policy.tokenizer, task, mix, config.eval, seed=config.seed, sampler=sampler)
    if args.output:
        with open_text(args.output, "w") as output:
            for row in report.rows:
                output.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    print(format_table(["metric", "value"], [[k, f"{v:.4f}"] for k, v in report.summary().items()]))
    print(f"{task.name} / {config.eval.split}: {report.prompts} prompts, {report.samples} samples, "
          f"model {policy.path}, sampler {sampler.name}")


def _require_a_config(args) -> None:
    """A training command given nothing at all would start a long all-defaults run in the current directory."""
    if not args.config and not args.overrides and not args.defaults:
        raise ConfigError(f"`rlvf {args.command}` needs a config: `rlvf init` writes a commented starter one, "
                          f"or pass --defaults to run on every default (keys: {REFERENCE})")


def cmd_config(args) -> None:
    from rlvf.config import load_config
    from rlvf.config_docs import reference_markdown, to_toml

    if args.reference:
        print(reference_markdown())
        return
    print(to_toml(load_config(args.config, args.overrides).model_dump()), end="")


def cmd_init(args) -> None:
    from rlvf.config_docs import starter_config

    task = _registry().task(args.task)
    text = starter_config(task.name, task.default_rewards)
    if str(args.output) == "-":
        print(text, end="")
        return
    if args.output.exists() and not args.force:
        raise ConfigError(f"{args.output} already exists; pass --force to overwrite it, or --output another file")
    args.output.write_text(text)
    print(f"wrote {args.output} (task '{task.name}', rewards {task.default_rewards}); run it with: "
          f"rlvf train {args.output}")


def _dry_run(config) -> None:
    """What `rlvf train` would do, checked as far as it can be without loading the model."""
    from rlvf.api.rewards import mix_from_config
    from rlvf.api.tasks import task_from_config
    from rlvf.config_docs import to_toml
    from rlvf.models.names import EMBEDDED_MODELS, resolve_model

    print(to_toml(config.model_dump()))
    registry = _registry()
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
    from rlvf.config import load_config
    from rlvf.stages.rl import Trainer

    _require_a_config(args)
    config = load_config(args.config, args.overrides)
    if args.dry_run:
        _dry_run(config)
        return
    trainer = None
    try:
        trainer = Trainer(config, _registry(), resume=args.resume or args.force_resume, force_resume=args.force_resume)
        results = trainer.run()
    except KeyboardInterrupt as exc:  # Ctrl-C: one line, exit status 130 (the last checkpoint is whole)
        import shlex

        again = shlex.join(["rlvf", "train", *([args.config] if args.config else []), *args.overrides, "--resume"])
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
    before, after = results.get("before"), results["after"]
    rows = [[key, f"{before[key]:.4f}" if before and key in before else "-", f"{value:.4f}"]
            for key, value in after.items()]
    print(format_table(["held-out metric", "before", "after"], rows))
    print(f"final model: {results['final_model']}\nmetrics: {trainer.output_dir / 'metrics.jsonl'}")


def _print_before_after(results: dict[str, Any], files: list[str]) -> None:
    before, after = results.get("before") or {}, results["after"]
    rows = [[key, f"{before[key]:.4f}" if key in before else "-", f"{value:.4f}"] for key, value in after.items()]
    print(format_table(["held-out metric", "before", "after"], rows))
    print("\n".join(files))


def _run_stage(args, run, summary, saved_as: str) -> None:
    """A training stage's command: load its config, run it, print its summary lines and before/after table."""
    from rlvf.config import load_config

    _require_a_config(args)
    results = run(load_config(args.config, args.overrides), _registry(), resume=args.resume or args.force_resume,
                  force_resume=args.force_resume)
    print("\n".join(summary(results)))
    _print_before_after(results, [f"{saved_as}: {results['final_model']}"])


def cmd_sft(args) -> None:
    from rlvf.stages.sft import run_sft

    _run_stage(args, run_sft, lambda r: [
        f"{r['train_examples']} demonstrations, {r['steps']} optimiser steps; held-out: completion loss per token "
        f"on {r['eval_examples']} demonstrations"], "final model")


def cmd_train_rm(args) -> None:
    from rlvf_rm.train import run_train_rm  # until rlvf-rm registers the command itself

    _run_stage(args, run_train_rm, lambda r: [
        f"{r['train_pairs']} training pairs, {r['steps']} optimiser steps; held-out: {r['eval_pairs']} pairs "
        "(accuracy: the chosen completion scores higher)"], "reward model")


def cmd_dpo(args) -> None:
    from rlvf.stages.dpo import run_dpo

    _run_stage(args, run_dpo, lambda r: [
        f"{r['train_pairs']} training pairs, {r['steps']} optimiser steps; held-out: {r['eval_pairs']} pairs "
        "(rewards/*: implicit rewards beta * log pi/pi_ref)"], "final model")


def cmd_train_judge(args) -> None:
    from rlvf_judge.train import run_train_judge  # until rlvf-judge registers the command itself

    def summary(r: dict[str, Any]) -> list[str]:
        generated = [f"generated {key}: {value:.4f}" if isinstance(value, float) else f"generated {key}: {value}"
                     for key, value in (r.get("generated") or {}).items()]
        return [*generated, f"{r['train_rows']} training rows ({r['train_positive']} labelled 1), {r['steps']} "
                f"optimiser steps; held-out: {r['eval_rows']} rows ({r['eval_positive']} labelled 1; auc: p(yes) "
                "ranks a label-1 row above a label-0 row)"]

    _run_stage(args, run_train_judge, summary, "judge")


def cmd_pairs(args) -> None:
    from rlvf.api.rewards import mix_from_config
    from rlvf.api.tasks import task_from_config
    from rlvf.config import load_config
    from rlvf.models.loading import load_policy
    from rlvf.stages.pairs import generate_pairs

    config = load_config(args.config, args.overrides)
    registry = _registry()
    task = task_from_config(config.task, registry)
    mix = mix_from_config(config.reward, registry, task.default_rewards)
    policy = load_policy(config.model, path=args.model)
    sampler = _sampler(config, policy, config.pairs.batch_size)
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

    directory = write_plugin(args.name, Path(args.directory))
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


REFERENCE = "examples/CONFIG.md, or `rlvf config --reference`"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlvf", description="RL for language models with plugin rewards",
                                     epilog=f"every config key: {REFERENCE}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = {}  # name -> its parser, which main() runs alone so that options may come anywhere

    def add(name, function, help_text, config_keys=False):
        epilog = f"config keys: {REFERENCE}" if config_keys else None
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=epilog)
        sub.set_defaults(function=function)
        parser.commands[name] = sub
        return sub

    def add_stage(name, function, help_text, config_help, overrides_help):
        """A training command: CONFIG and overrides, or --defaults."""
        sub = add(name, function, help_text, config_keys=True)
        sub.add_argument("config", nargs="?", help=config_help)
        sub.add_argument("overrides", nargs="*", help=overrides_help)
        sub.add_argument("--defaults", action="store_true", help="run on every default when no config is given")
        return sub

    def add_resume(sub, key):
        sub.add_argument("--resume", action="store_true", help=f"continue from the last good checkpoint in {key}")
        sub.add_argument("--force-resume", action="store_true",
                         help="with --resume: continue although the config differs from the run's config.json")

    sub = add("plugins", cmd_plugins, "list installed plugins and what they provide")
    sub.add_argument("--json", action="store_true")
    sub = add("rewards", cmd_rewards, "list available rewards with their options")
    sub.add_argument("--json", action="store_true")
    add("algorithms", cmd_algorithms, "list the algorithm registries and presets ([algorithm] config keys)")
    sub = add("tasks", cmd_tasks, "list available tasks, or print rows of one")
    sub.add_argument("name", nargs="?", help="print rows of this task as JSONL")
    sub.add_argument("--config", dest="task_config", metavar="CONFIG",
                     help="print rows of the [task] this config declares (dataset tasks too)")
    sub.add_argument("--split", default="eval", choices=["train", "eval"])
    sub.add_argument("--limit", type=int, default=5)
    sub.add_argument("--json", action="store_true")

    sub = add("score", cmd_score, "score prompt/completion rows (JSONL) with a reward mix")
    sub.add_argument("config", nargs="?", help="TOML config whose [reward] section defines the mix")
    sub.add_argument("overrides", nargs="*", help="dotted overrides, e.g. reward.aggregation=normalize_then_sum")
    sub.add_argument("--reward", action="append", metavar="NAME[:WEIGHT]", help="a reward in the mix (repeat)")
    sub.add_argument("--aggregation", choices=["sum", "normalize_then_sum"])
    sub.add_argument("--on-error", choices=["raise", "zero"], help="failure policy for every reward")
    sub.add_argument("--input", required=True, type=Path, help="JSONL rows with 'completion' (and 'prompt', "
                     "plus the columns the rewards read); '-' for stdin")
    sub.add_argument("--output", default="-", type=Path, help="JSONL output (default: stdout)")
    sub.add_argument("--batch-size", type=int, default=64)

    sub = add("eval", cmd_eval, "pass@1 / pass@k of a model on a task's split, scored with the reward mix")
    sub.add_argument("config", nargs="?", help="TOML config ([model], [task], [reward], [eval])")
    sub.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.n=8 eval.k=[1,8]")
    sub.add_argument("--model", help="a model directory or checkpoint instead of [model].name")
    sub.add_argument("--output", type=Path, help="write the scored completions here (JSONL)")

    sub = add_stage("train", cmd_train, "train a policy with RL (GRPO and friends) on a task and a reward mix",
                    "TOML config (`rlvf init` writes one)", "dotted overrides, e.g. train.lr=1e-6 train.steps=50")
    add_resume(sub, "train.output_dir")
    sub.add_argument("--dry-run", action="store_true",
                     help="print the resolved config and what would run (task rows, rewards, model), then stop")

    add_stage("sft", cmd_sft, "supervised fine-tuning on demonstrations (loss on completion tokens only)",
              "TOML config ([model], [sft], and [task] for task demonstrations)",
              "dotted overrides, e.g. sft.lr=2e-5 sft.packing=true")
    add_stage("train-rm", cmd_train_rm, "train a Bradley-Terry reward model on preference pairs",
              "TOML config ([model], [preference], [rm])", "dotted overrides, e.g. rm.margin=0.5")
    add_stage("dpo", cmd_dpo, "direct preference optimisation (DPO or IPO) on preference pairs",
              "TOML config ([model], [preference], [dpo])", "dotted overrides, e.g. dpo.beta=0.1 dpo.loss=ipo")
    add_stage("train-judge", cmd_train_judge, "train an LLM judge: p(yes) up on label-1 rows, p(no) on label-0 rows",
              "TOML config ([model], [judge]; [task] and [reward] to generate rows)",
              "dotted overrides, e.g. judge.lr=1e-5 judge.rows.n=8")
    for name, section in (("sft", "sft"), ("train-rm", "rm"), ("dpo", "dpo"), ("train-judge", "judge")):
        add_resume(parser.commands[name], f"{section}.output_dir")

    sub = add("init", cmd_init, "write a commented starter config for `rlvf train` on a task")
    sub.add_argument("task", nargs="?", default="arithmetic", help="a task name (`rlvf tasks` lists them)")
    sub.add_argument("--output", "-o", type=Path, default=Path("rlvf.toml"), help="where to write it ('-': stdout)")
    sub.add_argument("--force", action="store_true", help="overwrite an existing file")

    sub = add("config", cmd_config, "print a config resolved (file + overrides + defaults) as TOML",
              config_keys=True)
    sub.add_argument("config", nargs="?", help="TOML config")
    sub.add_argument("overrides", nargs="*", help="dotted overrides")
    sub.add_argument("--reference", action="store_true", help="print every key with its type, default and meaning")

    sub = add("pairs", cmd_pairs, "sample a model on a task and write verified preference pairs (JSONL)")
    sub.add_argument("config", nargs="?", help="TOML config ([model], [task], [reward], [pairs])")
    sub.add_argument("overrides", nargs="*", help="dotted overrides, e.g. pairs.n=8 pairs.limit=100")
    sub.add_argument("--output", required=True, type=Path, help="JSONL of prompt/chosen/rejected ('-': stdout)")
    sub.add_argument("--model", help="a model directory or checkpoint instead of [model].name")

    sub = add("plot", cmd_plot, "write PNG curves (reward, accuracy, KL, length) of a training run")
    sub.add_argument("run_dir")

    sub = add("new-plugin", cmd_new_plugin, "write a ready-to-install reward plugin package")
    sub.add_argument("name", help="short name, e.g. 'toxicity' -> package rlvf-toxicity")
    sub.add_argument("--directory", default=".", help="where to create the package folder")

    sub = add("vllm-serve", cmd_vllm_serve, "start a vLLM server that `sampling.vllm_server` can sample from and "
              "sync weights into; options after `--` go to `vllm serve`")
    sub.add_argument("model", nargs="?", default="smollm2-135m", help="model name, HF id or directory")
    sub.add_argument("--port", type=int, default=8000)
    sub.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    sub.add_argument("--dtype", default="auto", help="auto: the trainer's (bfloat16 on a GPU, float32 on a CPU)")
    sub.add_argument("--kv-cache-gb", type=float, help="KV cache size (default on a CPU: 1 GiB)")
    sub.add_argument("--api-key", help="a token every request must carry, on every path (default: "
                     "$RLVF_VLLM_API_KEY); required to listen beyond loopback")
    sub.set_defaults(passthrough_ok=True)  # after `--`: more `vllm serve` options, e.g. -- --tensor-parallel-size 4

    sub = add("model", cmd_model, "resolve a model name to a local directory (converting an embedded model once)")
    sub.add_argument("name", nargs="?", default="smollm2-135m")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = build_parser()
    own = argv[: argv.index("--")] if "--" in argv else argv
    if own and own[0] in parser.commands:  # options anywhere: `rlvf train t.toml --resume train.steps=5`
        args = parser.commands[own[0]].parse_intermixed_args(own[1:])
        args.command = own[0]
    else:
        args = parser.parse_args(own)
    if "--" in argv and not getattr(args, "passthrough_ok", False):
        parser.error(f"`rlvf {args.command}` takes no arguments after --")
    args.passthrough = passthrough
    if getattr(args, "config", None) and "=" in args.config:  # `rlvf score key=value`: no config file
        args.overrides.insert(0, args.config)
        args.config = None
    try:
        args.function(args)
    except RlvfError as exc:
        print(f"rlvf {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `rlvf tasks arithmetic | head`
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
