"""Can RL against a learned reward raise accuracy at all? Sample the policy n times per held-out prompt, score each
sample with the learned reward (the proxy) and the verifier, and ask how good the proxy's own choice is:

    .venv/bin/python bench/best_of_n.py CONFIG --proxy NAME [--n 8] [key=value ...]
    .venv/bin/python bench/best_of_n.py --scored SCORED.jsonl --proxy NAME     # rows `rlvf eval --output` wrote

CONFIG is a `rlvf train` config whose mix holds the proxy and `eval.accuracy_reward` (the RLHF and RLAIF examples:
`rm` or `judge`, and `math` at weight 0); the samples come from `rlvf eval CONFIG eval.n=N --output ...`.

Prints, for k = 1, 2, 4, ..., n, the expected accuracy of the sample the proxy scores highest among k (best-of-k,
exact over all k-subsets), next to pass@k (the verifier's choice, the ceiling). Best-of-k is what RL against the
proxy can buy at a KL near log k (Gao et al. 2022, "Scaling laws for reward model overoptimization"): if it does not
rise above pass@1, no algorithm setting will. Also: the proxy's pairwise accuracy on the policy's own (right, wrong)
pairs of a prompt, and its spread within prompts whose samples are all right or all wrong, which GRPO's per-group
standardisation turns into advantages as large as real ones. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from math import comb
from pathlib import Path


def groups_by_prompt(rows: list[dict]) -> list[list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(json.dumps(row["prompt"], sort_keys=True), []).append(row)
    return list(grouped.values())


def best_of_k(proxy: list[float], correct: list[bool], k: int) -> float:
    """Expected correctness of the highest-proxy sample of a uniformly random k-subset (ties: the mean of the tied)."""
    n = len(proxy)
    order = sorted(range(n), key=lambda i: -proxy[i])
    total, rank = 0.0, 0
    while rank < n:
        tied = [i for i in order[rank:] if proxy[i] == proxy[order[rank]]]
        # P(the subset's best score is this tied value) = P(it holds one of the tied, none ranked above)
        above = rank
        p_best = (comb(n - above, k) - comb(n - above - len(tied), k)) / comb(n, k)
        total += p_best * sum(correct[i] for i in tied) / len(tied)
        rank += len(tied)
    return total


def pass_at_k(correct: list[bool], k: int) -> float:
    n, c = len(correct), sum(correct)
    return 1.0 - comb(n - c, k) / comb(n, k)


def report(rows: list[dict], proxy: str, gold: str) -> None:
    groups = groups_by_prompt(rows)
    n = min(len(g) for g in groups)
    missing = sum(row.get(proxy) is None for row in rows)
    if missing:
        print(f"note: {missing} samples have no `{proxy}` score; they count as the lowest", file=sys.stderr)
    scored = [([r.get(proxy) if r.get(proxy) is not None else float("-inf") for r in g[:n]],
               [bool(r[gold]) if gold != "correct" else bool(r["correct"]) for r in g[:n]]) for g in groups]
    print(f"{len(groups)} prompts, {n} samples each, proxy `{proxy}`, gold `{gold}`\n")
    print("| k | best-of-k by the proxy | pass@k (the verifier's choice) |")
    print("| ---: | ---: | ---: |")
    k = 1
    while k <= n:
        bok = statistics.mean(best_of_k(p, c, k) for p, c in scored)
        print(f"| {k} | {bok:.3f} | {statistics.mean(pass_at_k(c, k) for _, c in scored):.3f} |")
        k *= 2
    right_over_wrong = pairs = 0.0
    spread = {"mixed": [], "all right": [], "all wrong": []}
    for p, c in scored:
        right = [v for v, ok in zip(p, c, strict=True) if ok]
        wrong = [v for v, ok in zip(p, c, strict=True) if not ok]
        for a in right:
            for b in wrong:
                right_over_wrong += 1.0 if a > b else 0.5 if a == b else 0.0
                pairs += 1
        finite = [v for v in p if v != float("-inf")]
        kind = "mixed" if right and wrong else "all right" if right else "all wrong"
        if len(finite) > 1:
            spread[kind].append(statistics.pstdev(finite))
    print()
    if pairs:
        print(f"proxy prefers the right sample in {right_over_wrong / pairs:.3f} of {int(pairs)} (right, wrong) "
              "pairs within a prompt")
    for kind, values in spread.items():
        if values:
            print(f"proxy std within {kind} prompts: {statistics.mean(values):.3f} ({len(values)} prompts)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--proxy", required=True, help="the learned reward's name in the mix (a field of the rows)")
    parser.add_argument("--gold", default="correct", help="the verifier's field (default: eval's `correct`)")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--scored", help="rows written by `rlvf eval --output` instead of sampling")
    parser.add_argument("--model", help="the policy to sample (default: the config's [model])")
    parser.add_argument("--output", help="keep the scored samples here (default: a temporary file)")
    args = parser.parse_args()
    path = args.scored
    if path is None:
        if args.config is None:
            parser.error("give CONFIG or --scored")
        path = args.output or str(Path(tempfile.mkdtemp()) / "scored.jsonl")
        command = [str(Path(sys.executable).parent / "rlvf"), "eval", args.config, *args.overrides,
                   f"eval.n={args.n}", "eval.k=[1]", "--output", path]
        if not any(o.startswith("eval.temperature=") for o in args.overrides):
            command.insert(3, "eval.temperature=1.0")  # the policy samples as in training, not greedily
        if args.model:
            command += ["--model", args.model]
        print("$ " + " ".join(command), file=sys.stderr)
        subprocess.run(command, check=True, stdout=sys.stderr)
    with open(path, encoding="utf-8") as handle:
        report([json.loads(line) for line in handle if line.strip()], args.proxy, args.gold)


if __name__ == "__main__":
    main()
