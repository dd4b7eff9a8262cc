"""`rlvf plot RUN_DIR`: PNG curves of a run's metrics.jsonl."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from rlvf.engine.metrics import read_metrics

PANELS = [  # (title, metric keys drawn in the panel; "*" stands for each name found in the run)
    ("reward", ["reward/mean", "reward/*/mean"]),
    ("accuracy", ["accuracy", "eval/accuracy"]),
    ("KL to reference", ["kl"]),
    ("completion length (tokens)", ["completion/length_mean"]),
]


def plot_run(run_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    figure, axes = plt.subplots(2, 2, figsize=(10, 7))
    logged = list(dict.fromkeys(key for record in records for key in record))
    for axis, (title, patterns) in zip(axes.flat, PANELS, strict=True):
        keys = [key for pattern in patterns for key in logged if fnmatch.fnmatchcase(key, pattern)]
        for key in keys:
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                steps, values = zip(*points, strict=True)
                axis.plot(steps, values, marker="o" if key.startswith("eval/") else None, markersize=4,
                          label=key)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
        else:
            axis.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axis.transAxes)
    figure.suptitle(Path(run_dir).name)
    figure.tight_layout()
    path = Path(run_dir) / "curves.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path]
