"""`rlvf audit CONFIG`: red-team the config's reward mix before training on it (the tables it prints, --json,
--fail-on)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rlvf.audit.run import MIX_TOTAL, TOLERANCE, AuditReport, FamilyResult, RewardResult, run_audit
from rlvf.errors import ConfigError
from rlvf.tools.table import format_table

FLAG = "FLAGGED: scores above wrong answers"
NO_SEPARATION = "WARNING: gold not above wrong"


def add_audit_arguments(sub) -> None:
    sub.add_argument("config", nargs="?", help="TOML config whose [task] and [reward] are audited")
    sub.add_argument("overrides", nargs="*", help="dotted overrides, e.g. task.options.max_digits=2")
    sub.add_argument("--reward", action="append", metavar="NAME",
                     help=f"audit only this reward of the mix (repeat; '{MIX_TOTAL}': the mix total)")
    sub.add_argument("--limit", type=int, default=20, help="task rows to build completions from (default 20)")
    sub.add_argument("--fail-on", type=float, metavar="MARGIN",
                     help="exit 1 when an exploit family's mean is more than MARGIN above the wrong answers' mean "
                     "(0: any gain)")
    sub.add_argument("--json", type=Path, metavar="PATH", help="write every number and example completions here "
                     "('-': stdout)")
    sub.epilog = ("An exploit family is FLAGGED when it scores above wrong answers under a reward. Rows come from "
                  "the config's eval.split; families from the core and the plugins (hook register_exploits).")


def cmd_audit(args) -> int:
    from rlvf.api.rewards import check_task_columns, mix_from_config
    from rlvf.api.tasks import task_from_config
    from rlvf.commands import load_stage_config, open_text
    from rlvf.config import RewardEntry, StageConfig

    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    config = load_stage_config(args, StageConfig)
    registry = args.registry
    task = task_from_config(config.task, registry)
    mix_entries = dict(config.reward.mix) or {name: RewardEntry(weight=weight)
                                              for name, weight in task.default_rewards.items()}
    wanted = list(dict.fromkeys(args.reward or []))
    unknown = [name for name in wanted if name not in mix_entries and name != MIX_TOTAL]
    if unknown:
        raise ConfigError(f"--reward {unknown[0]}: not a reward of the mix; the mix's rewards are: "
                          f"{', '.join(mix_entries) or 'none'} (and '{MIX_TOTAL}', the mix total)")
    total = not wanted or MIX_TOTAL in wanted
    # the total needs every reward of the mix; otherwise only the rewards asked for are built and called
    config.reward.mix = mix_entries if total else {name: mix_entries[name] for name in wanted}
    mix = mix_from_config(config.reward, registry)
    split = config.eval.split
    rows = task.rows(split, limit=args.limit)
    if not rows:
        raise ConfigError(f"task '{task.name}' has no {split} rows to audit")
    check_task_columns(mix, task, rows=rows, limit=len(rows))
    if not registry.exploits:
        raise ConfigError("no exploit families are registered (the core's come from entry point builtin-exploits: "
                          "reinstall rlvf)")
    titles = {entry.name: f"{entry.name} (weight {entry.weight:g}, from "
                          f"{registry.reward(mix_entries[entry.name].reward or entry.name).plugin})"
              for entry in mix.entries}
    titles[MIX_TOTAL] = (f"{MIX_TOTAL}: the mix total ({' + '.join(f'{e.name} x{e.weight:g}' for e in mix.entries)}"
                         f", {mix.aggregation})")
    report = run_audit(mix, rows, list(registry.exploits.values()), task=task.name, split=split, seed=config.seed,
                       titles=titles, total=total)
    if wanted:
        report.results = [result for result in report.results if result.name in wanted]
    if args.json:
        with open_text(args.json, "w") as output:
            output.write(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    print_report(report, file=sys.stderr if args.json and str(args.json) == "-" else sys.stdout)
    if args.fail_on is not None and (failures := report.flagged(args.fail_on)):
        listed = ", ".join(f"reward '{reward.name}' / family '{family.family.name}' ({family.gain:+.4f})"
                           for reward, family in failures)
        print(f"rlvf audit: failed (--fail-on {args.fail_on:g}): exploits score more than {args.fail_on:g} above "
              f"wrong answers: {listed}", file=sys.stderr)
        return 1
    return 0


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    value = 0.0 if abs(value) <= TOLERANCE else value  # float noise of a sum: no "-0.0000"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _flag(reward: RewardResult, result: FamilyResult) -> str:
    role = result.family.role
    if result.mean is None:
        return "n/a (the reward does not apply)"
    if role == "wrong":
        return "baseline"
    if role == "gold":
        return {True: "ok", False: NO_SEPARATION, None: "-"}[reward.separates]
    if not result.flagged:
        return "ok" if result.gain is not None else "-"
    share = result.share_of(reward.gold_gain)
    return FLAG + (f" ({share:.0%} of gold's gain)" if share is not None else "")


def _shown(text: str, width: int = 110) -> str:
    shown = json.dumps(text, ensure_ascii=False)
    return shown if len(shown) <= width else shown[: width - 4] + '..."'


def print_report(report: AuditReport, file=sys.stdout) -> None:
    """The families, one table per reward (role, completions, mean, gain over wrong, flag) with the best-scoring
    completion of each flagged family, and a summary line."""
    def say(text: str = "") -> None:
        print(text, file=file)

    applicable = [family for family in report.families if family not in report.not_applicable]
    say(f"audit of task '{report.task}' ({report.split} split, {report.rows} rows, seed {report.seed}): "
        f"{len(applicable)} families, {len(report.completions)} completions")
    say(format_table(["family", "role", "from", "what it tries"],
                     [[f.name, f.role, f.plugin, f.description] for f in applicable]))
    if report.not_applicable:
        say(f"not applicable to these rows: {', '.join(f.name for f in report.not_applicable)}")
    for reward in report.results:
        say()
        say(reward.title)
        rows = [[r.family.name, r.family.role,
                 f"{r.completions}" + (f" ({r.completions - len(r.scored)} n/a)" if len(r.scored) < r.completions
                                       else ""),
                 _number(r.mean), "-" if r.family.role == "wrong" else _number(r.gain, signed=True), _flag(reward, r)]
                for r in reward.families]
        say(format_table(["family", "role", "completions", "mean", "gain", "flag"], rows))
        if reward.separates is False:
            say(f"warning: '{reward.name}' does not score gold above wrong answers (gold {_number(reward.gold_mean)}, "
                f"wrong {_number(reward.wrong_mean)}): it does not tell right from wrong (a format reward, or broken)")
        for result in reward.families if reward.separates is not False else ():  # a format reward: no surprise
            if result.flagged:
                completion, score = result.examples(1)[0]
                say(f"  {result.family.name}, row {completion.row}, score {score:.4f}: {_shown(completion.text)}")
    say()
    if not report.flagged():
        say("no exploit family scores above wrong answers")
        return
    say("flagged (exploits scoring above wrong answers):")
    for reward in report.results:
        if flagged := [result for result in reward.families if result.flagged]:
            note = " (it does not tell right from wrong: expected of a format reward)" if reward.separates is False \
                else ""
            say(f"  {reward.name}: {', '.join(f'{r.family.name} {r.gain:+.4f}' for r in flagged)}{note}")
