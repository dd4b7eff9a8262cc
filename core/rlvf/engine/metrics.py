"""Per-step metrics to JSONL (always readable, resumable), TensorBoard, and W&B when asked for."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rlvf.errors import ConfigError

METRICS_FILE = "metrics.jsonl"
COMPLETIONS_FILE = "completions.jsonl"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {METRICS_FILE}: is it a run directory of `rlvf train`?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLogger:
    def __init__(self, run_dir: Path, report_to: list[str], resume_step: int = 0, config: dict | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / METRICS_FILE
        _truncate(path, resume_step)
        _truncate(self.run_dir / COMPLETIONS_FILE, resume_step, create=False)  # written by `rlvf train` only
        self.jsonl = open(path, "a", encoding="utf-8") if "jsonl" in report_to else None  # noqa: SIM115
        self.completions_path = self.run_dir / COMPLETIONS_FILE
        self.tensorboard = self.wandb = None
        if "tensorboard" in report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("train.report_to has 'tensorboard' but the tensorboard package is not "
                                  "installed: pip install tensorboard") from None
            self.tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=resume_step or None)
        if "wandb" in report_to:
            try:
                import wandb
            except ImportError:
                raise ConfigError("train.report_to has 'wandb' but wandb is not installed: pip install wandb") \
                    from None
            self.wandb = wandb.init(project="rlvf", dir=str(self.run_dir), config=config, resume="allow")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        if self.jsonl:
            self.jsonl.write(json.dumps({"step": step, **clean}) + "\n")
            self.jsonl.flush()
        if self.tensorboard:
            for key, value in clean.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb:
            self.wandb.log(clean, step=step)

    def log_completions(self, step: int, records: list[dict[str, Any]]) -> None:
        """Sampled completions of a step, one JSON line each (and a TensorBoard text table if it is on)."""
        with open(self.completions_path, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps({"step": step, **r}, ensure_ascii=False, default=str) + "\n"
                                 for r in records))
        if self.tensorboard and records:
            names = list(records[0].get("rewards", {}))
            table = ["| prompt | completion | " + " | ".join(names) + " | reward |",
                     "|" + " --- |" * (len(names) + 3)]
            table += [f"| {_cell(r['prompt'])} | {_cell(r['completion'])} | "
                      + " | ".join(_cell(r["rewards"].get(n)) for n in names) + f" | {_cell(r.get('reward'))} |"
                      for r in records]
            self.tensorboard.add_text("completions", "\n".join(table), step)

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()
        if self.tensorboard:
            self.tensorboard.close()
        if self.wandb:
            self.wandb.finish()


def _truncate(path: Path, resume_step: int, create: bool = True) -> None:
    """A fresh run starts the file empty; a resumed one drops what was logged after its checkpoint (and a
    last line cut short by a kill)."""
    if resume_step and path.is_file():
        kept = []
        for line in path.read_text().splitlines():
            try:
                if line.strip() and json.loads(line)["step"] <= resume_step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        path.write_text("".join(line + "\n" for line in kept))
    elif not resume_step and (create or path.exists()):
        path.write_text("")


def _cell(value: Any) -> str:
    """A value as one cell of a Markdown table (TensorBoard's text plugin renders Markdown)."""
    return str(value).replace("|", "\\|").replace("\n", "<br>")
