"""Checkpoints of every training stage: written whole or not at all, verified when read back.

A checkpoint is `run_dir/checkpoints/step-NNNNNN/`: the model's weights as a HF directory (safetensors, written
by save_pretrained), or for a model with LoRA adapters ([model] lora) only the adapters, in `adapter/` (peft's
layout, rlvf.models.lora: the base weights are the run's model.name), `trainer_state.pt` (step, data position,
optimizer, scheduler, python and torch RNG, and what else the stage adds) and extra named parts
(`critic/critic.safetensors`). It is written into a staging directory, closed by its manifest
(rlvf.engine.rundir.write_manifest) and renamed into place; reading one checks the manifest first, and a damaged
newest checkpoint falls back to the previous whole one.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlvf.engine.rundir import RESUMABLE_KEYS, check_resume_config, checkpoint_problem, write_manifest
from rlvf.errors import ConfigError
from rlvf.models.lora import ADAPTER_DIR, ADAPTER_FILE, has_adapters, load_adapter_weights, read_adapters, save_adapters

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"


class DamagedCheckpoint(Exception):
    """A checkpoint file fails its manifest or cannot be read; the message names it and why."""


@dataclass
class Checkpoint:
    directory: Path
    weights: dict[str, torch.Tensor]  # the model's, as saved (a tied LM head once); {} when it holds adapters
    state: dict[str, Any]  # trainer_state.pt
    parts: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # name -> weights of name/name.safetensors
    damaged: list[str] = field(default_factory=list)  # newer checkpoints skipped: "step-000004 (why)"
    adapters: dict[str, torch.Tensor] | None = None  # the LoRA adapters' weights (rlvf.models.lora.adapter_weights)

    @property
    def step(self) -> int:
        return self.state["step"]


def save_checkpoint(run_dir: Path, step: int, model, *, optimizer_state: dict, scheduler_state: dict,
                    data_position: int, keep: int, weights: dict[str, torch.Tensor] | None = None, tokenizer=None,
                    parts: dict[str, torch.nn.Module] | None = None, state: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint of `step` and keep the newest `keep` (0: all); returns its directory.

    `weights`: the model's full state dict when the caller gathered it (FSDP), else the model's own; a model with
    LoRA adapters saves only them (and its config.json). `parts`: modules saved as `name/name.safetensors`;
    `state`: more entries of trainer_state.pt."""
    checkpoints = Path(run_dir) / CHECKPOINTS
    target = checkpoints / f"step-{step:06d}"
    staging = checkpoints / f".writing-{step:06d}"
    for leftover in checkpoints.glob(".writing-*"):  # of a run killed while writing
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir(parents=True)
    required = [STATE_FILE, "config.json"]
    if has_adapters(model):  # what trains; the base weights are the run's model
        save_adapters(model, staging / ADAPTER_DIR)
        model.config.save_pretrained(staging)
        required.append(f"{ADAPTER_DIR}/{ADAPTER_FILE}")
    else:
        model.save_pretrained(staging, **({} if weights is None else {"state_dict": weights}))
    if tokenizer is not None:
        tokenizer.save_pretrained(staging)
    torch.save({"step": step, "data_position": data_position, "optimizer": optimizer_state,
                "scheduler": scheduler_state, "rng": {"python": random.getstate(), "torch": torch.get_rng_state()},
                **(state or {})}, staging / STATE_FILE)
    if parts:  # each in its own folder: the top level holds the model's weights only
        from safetensors.torch import save_model

        for name, module in parts.items():
            (staging / name).mkdir()
            save_model(module, str(staging / name / f"{name}.safetensors"))
            required.append(f"{name}/{name}.safetensors")
    if not list(staging.glob("*.safetensors")) and not (staging / ADAPTER_DIR / ADAPTER_FILE).is_file():
        raise OSError(f"{staging}: the model's weights were not written")
    write_manifest(staging, step, required)
    # Checkpoints at or after this step are left from an earlier attempt (the run resumed before them, so they
    # were damaged): this run rewrites them.
    for stale in checkpoints.glob("step-*"):
        if int(stale.name.split("-")[1]) >= step:
            shutil.rmtree(stale)
    staging.rename(target)  # a checkpoint exists whole or not at all, even if the run is killed here
    if keep:  # 0: keep all
        for old in sorted(checkpoints.glob("step-*"))[:-keep]:
            shutil.rmtree(old)
    return target


def read_checkpoint(directory: Path) -> Checkpoint:
    """The weights, state and parts of one checkpoint; a DamagedCheckpoint names the file that fails its manifest
    or cannot be read."""
    from safetensors.torch import load_file

    problem = checkpoint_problem(directory)
    if problem:
        raise DamagedCheckpoint(problem)
    weights: dict = {}
    parts: dict[str, dict] = {}
    adapters = None
    name = STATE_FILE
    try:
        shards = sorted(directory.glob("*.safetensors"))
        if (directory / ADAPTER_DIR).is_dir():
            name = f"{ADAPTER_DIR}/{ADAPTER_FILE}"
            adapters = read_adapters(directory / ADAPTER_DIR)
        elif not shards:
            raise DamagedCheckpoint("no *.safetensors weights")
        for shard in shards:
            name = shard.name
            weights |= load_file(shard)
        name = STATE_FILE
        state = torch.load(directory / name, weights_only=False)
        for part in sorted(directory.glob("*/*.safetensors")):
            if part.stem == part.parent.name:
                name = f"{part.parent.name}/{part.name}"
                parts[part.stem] = load_file(part)
    except DamagedCheckpoint:
        raise
    except Exception as exc:  # whatever a broken file raises, it is named in one line
        reason = "missing" if isinstance(exc, FileNotFoundError) else f"unreadable, {type(exc).__name__}"
        raise DamagedCheckpoint(f"{name}: {reason}") from None
    return Checkpoint(Path(directory), weights, state, parts, adapters=adapters)


def latest_checkpoint(run_dir: Path, key: str, say: bool = True) -> Checkpoint | None:
    """The newest whole checkpoint of a run (damaged newer ones are skipped and listed in its `damaged`), or None
    if it saved none (said when `say`); none whole is one ConfigError. `key` sets the run directory."""
    run_dir = Path(run_dir)
    checkpoints = sorted((run_dir / CHECKPOINTS).glob("step-*"), reverse=True)
    if not checkpoints:  # nothing saved yet: start from the beginning
        if say:
            print(f"--resume: no checkpoint in {run_dir}: starting fresh", file=sys.stderr, flush=True)
        return None
    damaged: list[str] = []
    for directory in checkpoints:
        try:
            checkpoint = read_checkpoint(directory)
        except DamagedCheckpoint as exc:
            damaged.append(f"{directory.name} ({exc})")
            continue
        checkpoint.damaged = damaged
        return checkpoint
    raise ConfigError(f"no checkpoint in {run_dir / CHECKPOINTS} is usable: {'; '.join(damaged)}: "
                      f"remove the directory to start over, or set {key} to a new one")


def check_resume(run_dir: Path, current: dict[str, Any], force: bool, allowed: tuple[str, ...] = RESUMABLE_KEYS,
                 say: bool = True) -> None:
    """On --resume: the run was started with the same config but for the `allowed` keys
    (rlvf.engine.rundir.check_resume_config), or --force-resume, which says what changes."""
    differences = check_resume_config(run_dir, current, force, allowed)
    if differences and say:
        print(f"--force-resume: {run_dir} continues with "
              + ", ".join(f"{name} = {json.dumps(new, default=str)} (was {json.dumps(old, default=str)})"
                          for name, old, new in differences), file=sys.stderr, flush=True)


def say_resuming(run_dir: Path, checkpoint: Checkpoint, total: int) -> None:
    """One line for the damaged checkpoints skipped (if any), one for the step the run resumes from."""
    damaged, name = checkpoint.damaged, checkpoint.directory.name
    if damaged:
        print(f"checkpoint {damaged[0].replace(' (', ' is damaged (', 1)}; resuming from {name}"
              if len(damaged) == 1 else f"checkpoints {', '.join(damaged)} are damaged; resuming from {name}",
              file=sys.stderr, flush=True)
    print(f"resuming {run_dir} from step {checkpoint.step} of {total}", file=sys.stderr, flush=True)


def load_weights(model, checkpoint: Checkpoint) -> None:
    """The checkpoint's weights (or LoRA adapters) into `model` (one process); a checkpoint of another model, or
    with adapters for a model without them or the other way round, is a ConfigError."""
    if has_adapters(model) or checkpoint.adapters is not None:
        if not has_adapters(model) or checkpoint.adapters is None:
            held, wanted = ("LoRA adapters", "full weights") if checkpoint.adapters is not None else \
                ("full weights", "LoRA adapters")
            raise ConfigError(f"checkpoint {checkpoint.directory} holds {held} but the run trains {wanted}: "
                              "[model] lora differs from the run's")
        load_adapter_weights(model, checkpoint.adapters, f"checkpoint {checkpoint.directory}")
        return
    missing, unexpected = model.load_state_dict(checkpoint.weights, strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # lm_head is tied to the embeddings
        raise ConfigError(f"checkpoint {checkpoint.directory} does not fit the model: missing {missing}, "
                          f"unexpected {unexpected}")


def load_part(module: torch.nn.Module, checkpoint: Checkpoint, name: str) -> None:
    """A part saved with the checkpoint (`parts` of save_checkpoint) into `module`: load_model restores weights
    shared within it."""
    from safetensors.torch import load_model

    load_model(module, str(checkpoint.directory / name / f"{name}.safetensors"))


def restore_rng(checkpoint: Checkpoint) -> None:
    random.setstate(checkpoint.state["rng"]["python"])
    torch.set_rng_state(checkpoint.state["rng"]["torch"])


def restore(checkpoint: Checkpoint, model, optimizer, scheduler) -> int:
    """Weights, optimizer, scheduler and RNG of a one-process run back from `checkpoint`; returns its step."""
    load_weights(model, checkpoint)
    optimizer.load_state_dict(checkpoint.state["optimizer"])
    scheduler.load_state_dict(checkpoint.state["scheduler"])
    restore_rng(checkpoint)
    return checkpoint.step
