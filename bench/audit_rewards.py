"""`rlvf audit` on every built-in reward: gold, wrong, and the exploit families that score above wrong answers.

    .venv/bin/python bench/audit_rewards.py [--limit 20] [--model-limit 5] [--judge DIR] [--rm DIR]

Each case is a config (task + reward mix) audited through the real CLI (`rlvf audit --json`); the table has one row
per reward: the mean of gold and of wrong answers, then every flagged exploit family with its gain over wrong. The
judge is audited on one-digit products with the template it had before issue #19 (the response pasted unquoted)
and with the reference-guided default (the default for rows with an `answer`). A trained judge or reward model is
added when its directory exists. Model-based rewards audit fewer rows (`--model-limit`): each row gives ~45
completions, and a 135M model reads each on a CPU. Prints a table; asserts nothing (the assertions are in
tests/test_audit*.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RLVF = str(Path(sys.executable).with_name("rlvf"))
ARITHMETIC = '[task]\nname = "arithmetic"\nfew_shot = []\noptions = { max_digits = 1 }\n'
PRODUCTS = '[task]\nname = "arithmetic"\nfew_shot = []\noptions = { max_digits = 1, operators = ["*"] }\n'


def judge_case(label: str, model: str | None, template: str | None) -> tuple[str, str, bool]:
    options = {"batch_size": 16}
    if model:
        options["model"] = model
    if template:
        options["template"] = template
    entry = ", ".join(f"{key} = {json.dumps(value)}" for key, value in options.items())
    return label, PRODUCTS + f'[reward.mix]\njudge = {{ reward = "judge", options = {{ {entry} }} }}\n', True


def cases(args) -> list[tuple[str, str, bool]]:
    """(label, config, whether the reward is a model) of every case."""
    from rlvf_judge.judging import UNQUOTED_TEMPLATE

    out = [
        ("math, boxed (examples/demo.toml)", (ROOT / "examples/demo.toml").read_text(), False),
        ("code, code_fence (examples/code_grpo.toml)", (ROOT / "examples/code_grpo.toml").read_text(), False),
        ("rlvf-text rewards on arithmetic", ARITHMETIC + "[reward.mix]\nqa = 1.0\nqa_exact = 1.0\nthink_format = 1.0\n"
         "overlong = 1.0\nrepetition = 1.0\n", False),
        judge_case("judge, embedded, template before #19 (unquoted)", None, UNQUOTED_TEMPLATE),
        judge_case("judge, embedded, reference-guided default", None, None),
    ]
    if Path(args.judge).is_dir():
        out.append(judge_case(f"judge, trained ({args.judge}), template before #19", args.judge, UNQUOTED_TEMPLATE))
        out.append(judge_case(f"judge, trained ({args.judge}), reference-guided default", args.judge, None))
    if Path(args.rm).is_dir():
        out.append((f"reward_model ({args.rm})", ARITHMETIC.replace("few_shot = []\n", "") +
                    f'[reward.mix]\nrm = {{ reward = "reward_model", options = {{ path = "{args.rm}" }} }}\n', True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20, help="task rows per case")
    parser.add_argument("--model-limit", type=int, default=5,
                        help="task rows per case of a model-based reward (0: skip those cases)")
    parser.add_argument("--judge", default="runs/rlaif/judge/final", help="a trained judge to audit, if it exists")
    parser.add_argument("--rm", default="runs/rlhf/rm/final", help="a trained reward model to audit, if it exists")
    args = parser.parse_args()
    lines = ["| case | reward | gold | wrong | exploit families above wrong (gain) | s |",
             "|---|---|---:|---:|---|---:|"]
    with tempfile.TemporaryDirectory() as directory:
        for index, (label, config, is_model) in enumerate(cases(args)):
            path, report = Path(directory) / f"case{index}.toml", Path(directory) / f"case{index}.json"
            path.write_text(config)
            start = time.perf_counter()
            limit = args.model_limit if is_model else args.limit
            if not limit:
                continue
            run = subprocess.run([RLVF, "audit", str(path), "--limit", str(limit), "--json", str(report)],
                                 capture_output=True, text=True, cwd=ROOT)
            seconds = time.perf_counter() - start
            if run.returncode != 0:
                error = run.stderr.strip().splitlines()[-1][:100]
                lines.append(f"| {label} | (failed: {error}) | | | | {seconds:.0f} |")
                continue
            rewards = json.loads(report.read_text())["rewards"]
            for name, result in rewards.items():
                if name == "reward" and len(rewards) == 2:
                    continue  # a one-reward mix: the total is the reward itself
                flagged = [(family, r["gain"]) for family, r in result["families"].items() if r["flagged"]]
                flags = ", ".join(f"{family} +{gain:.3f}" for family, gain in sorted(flagged, key=lambda f: -f[1]))
                gold, wrong = result["gold_mean"], result["wrong_mean"]
                lines.append(f"| {label} | {name} | {fmt(gold)} | {fmt(wrong)} | {flags or 'none'} | {seconds:.0f} |")
                label = ""
            print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
