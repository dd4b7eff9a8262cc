"""Per-step metrics to JSONL (always readable, resumable), TensorBoard, and W&B when asked for."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rlvf.errors import ConfigError

METRICS_FILE = "metrics.jsonl"


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
        if resume_step and path.is_file():  # drop what was logged after the checkpoint we resume from
            kept = [line for line in path.read_text().splitlines() if line.strip()
                    and json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        elif not resume_step:
            path.write_text("")
        self.jsonl = open(path, "a", encoding="utf-8") if "jsonl" in report_to else None  # noqa: SIM115
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

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()
        if self.tensorboard:
            self.tensorboard.close()
        if self.wandb:
            self.wandb.finish()
