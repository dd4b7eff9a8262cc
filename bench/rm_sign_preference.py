"""Does a reward model know the sign of a negative answer? For every one-digit question with a negative answer
(`a - b`, a < b), the RM scores the right worked answer against the same text with the minus sign dropped:

    .venv/bin/python bench/rm_sign_preference.py [RM_DIR ...]     # default: the RLHF example's RMs that exist

`0 - 6 = -6. The answer is \\boxed{-6}.` against `0 - 6 = 6. The answer is \\boxed{6}.`, asked zero-shot as GRPO
asks (examples/rlhf). Prints, per RM and split, how often the right sign scores higher and the mean margin. Asserts
nothing; the `sign_dropped` audit family and tests/test_rlhf.py cover the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rlvf.api import mix_from_config, with_sign_dropped
from rlvf.config import RewardConfig
from rlvf.plugins import get_registry

DEFAULT_RMS = ["runs/rlhf/rm/final", "runs/rlhf/rm_sign/final"]


def worked(row: dict, value: str) -> str:
    return f"{row['expression']} = {value}. The answer is \\boxed{{{value}}}."


def main() -> None:
    paths = sys.argv[1:] or [path for path in DEFAULT_RMS if Path(path).is_dir()]
    task = get_registry().task("arithmetic").configured(max_digits=1)
    print("| reward model | split | negative answers | right sign scored higher | mean margin (right - dropped) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for path in paths:
        mix = mix_from_config(RewardConfig(mix={"rm": {"reward": "reward_model", "options": {"path": path}}}),
                              get_registry())
        for split in ("train", "eval"):
            rows = [row for row in task.rows(split) if int(row["answer"]) < 0]
            prompts = [[{"role": "user", "content": row["prompt"][-1]["content"]}] for row in rows] * 2
            right_texts = [worked(row, row["answer"]) for row in rows]
            completions = right_texts + [with_sign_dropped(text, row["answer"])
                                         for text, row in zip(right_texts, rows, strict=True)]
            scores = mix.score(prompts, completions).per_reward["rm"]
            right, dropped = scores[:len(rows)], scores[len(rows):]
            wins = sum(r > d for r, d in zip(right, dropped, strict=True))
            margin = sum(r - d for r, d in zip(right, dropped, strict=True)) / len(rows)
            print(f"| {path} | {split} | {len(rows)} | {wins} | {margin:+.2f} |")


if __name__ == "__main__":
    main()
