"""Run directories and checkpoints: checked before anything is loaded, verified when written and when read.

A run directory holds `config.json` (the resolved config, written when the run starts), `metrics.jsonl`,
`completions.jsonl`, `checkpoints/step-NNNNNN/` and, once finished, `final/` and `results.json`. Every
problem with one is a ConfigError of one line naming the path and the fix.

A checkpoint is written into a staging directory, closed by `manifest.json` (each file's size and SHA-256,
written last, after every file was read back), and only then renamed into place: a checkpoint directory
exists whole or not at all. Reading one checks the manifest first, so a truncated or corrupted file is
named instead of failing deep inside safetensors or torch.load.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from rlvf.errors import ConfigError

CONFIG_FILE = "config.json"
MANIFEST = "manifest.json"
RESULTS_FILE = "results.json"
PROBE = ".rlvf-write-test"

# Keys of `rlvf train`'s config that may differ on --resume without --force-resume: how long to train, how often
# to save/evaluate/log, where to report, and sections other commands read. Everything else (model, task,
# reward mix, sampling, algorithm, critic, optimiser and batch shape, seed) changes what is trained.
RESUMABLE_KEYS = ("train.steps", "train.save_every", "train.keep_checkpoints", "train.eval_every",
                  "train.eval_before", "train.report_to", "train.progress", "train.log_completions_every",
                  "train.output_dir", "train.parallel", "eval.")


def check_run_dir(directory: Path, key: str, *, resume: bool = False, command: str = "") -> Path:
    """Refuse a run directory that cannot hold this run, before any model is loaded; create it.

    `key` is the config key that sets it (`train.output_dir`); `command` is how to resume (`--resume`), empty
    for commands that cannot resume. Without `resume`, a directory holding files is refused."""
    directory = Path(directory)
    fix = f"set {key} to another path"
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{key} = {directory} is a file, not a directory: {fix}")
    for parent in directory.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{key} = {directory}: {parent} is a file, not a directory: {fix}")
            break
    if directory.is_dir() and not resume and any(not p.name.startswith(PROBE) for p in directory.iterdir()):
        fix = f"set {key} to a new directory"
        if (directory / RESULTS_FILE).is_file():
            raise ConfigError(f"{directory} already holds a run: {fix} (or remove it; that run finished, see "
                              f"{RESULTS_FILE})")
        if command:
            raise ConfigError(f"{directory} already holds a run: resume it with {command}, or {fix}")
        raise ConfigError(f"{directory} already holds a run: {fix} (or remove it)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f"{PROBE}-{os.getpid()}"  # one per process: ranks of a torchrun launch check at once
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to {directory} ({exc.strerror or exc}): {fix}, one you can write to") \
            from None
    return directory


# --- the config a run was started with ---

def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for name, value in data.items():
            out |= _flatten(value, f"{prefix}{name}.")
        return out
    return {prefix[:-1]: data}


def config_differences(saved: dict[str, Any], current: dict[str, Any],
                       allowed: tuple[str, ...] = RESUMABLE_KEYS) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, current value) of each key that differs, leaving out the `allowed` ones (a
    key equal to an entry, or below one ending in '.')."""
    old, new = _flatten(saved), _flatten(current)
    differences = []
    for name in sorted(old.keys() | new.keys()):
        if any(name == a or (a.endswith(".") and name.startswith(a)) or name.startswith(a + ".") for a in allowed):
            continue
        if old.get(name, "<unset>") != new.get(name, "<unset>"):
            differences.append((name, old.get(name, "<unset>"), new.get(name, "<unset>")))
    return differences


def read_run_config(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc}): restore it, or remove it to resume with the "
                          "current config") from None


def write_run_config(directory: Path, config: dict[str, Any]) -> None:
    path = Path(directory) / CONFIG_FILE
    staging = path.with_name(f".{CONFIG_FILE}.writing")
    staging.write_text(json.dumps(config, indent=2, default=str) + "\n")
    staging.replace(path)


def check_resume_config(directory: Path, current: dict[str, Any], force: bool,
                        allowed: tuple[str, ...] = RESUMABLE_KEYS) -> list[tuple[str, Any, Any]]:
    """Refuse a resume whose training-relevant config (all but the `allowed` keys) differs from the saved one
    (unless `force`); returns the differences (empty if none, or if the run saved no config)."""
    saved = read_run_config(directory)
    if saved is None:
        return []
    differences = config_differences(saved, current, allowed)
    if differences and not force:
        listed = ", ".join(f"{name}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"
                           for name, old, new in differences)
        raise ConfigError(f"{directory} was started with another config ({listed}): resume with the saved config "
                          f"({Path(directory) / CONFIG_FILE}), or pass --force-resume to continue with this one")
    return differences


# --- checkpoint manifests ---

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
        os.fsync(handle.fileno())  # on disk before the manifest that vouches for it
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: Path, step: int, required: list[str]) -> None:
    """Read back every file of a staging checkpoint and close it with its manifest (written last). Raises
    OSError if a `required` file is missing or empty: such a checkpoint is never renamed into place."""
    for name in required:
        path = directory / name
        if not path.is_file() or path.stat().st_size == 0:
            raise OSError(f"checkpoint file {path} was not written")
    files = {str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in _files(directory)}
    staging = directory / f".{MANIFEST}.writing"
    with open(staging, "w") as handle:
        json.dump({"step": step, "files": files}, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    staging.rename(directory / MANIFEST)


def checkpoint_problem(directory: Path) -> str | None:
    """Why a checkpoint cannot be trusted (`model.safetensors: truncated`), or None if its manifest holds.
    A checkpoint without a manifest (written by an older rlvf) is not checked here."""
    path = directory / MANIFEST
    if not path.exists():
        return None if any(directory.glob("*.safetensors")) else f"{MANIFEST}: missing"
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST}: unreadable"
    for name, entry in files.items():
        file = directory / name
        if not file.is_file():
            return f"{name}: missing"
        size = file.stat().st_size
        if size < entry["size"]:
            return f"{name}: truncated, {size} of {entry['size']} bytes"
        if size > entry["size"]:
            return f"{name}: {size} bytes, {entry['size']} written"
        if _sha256(file) != entry["sha256"]:
            return f"{name}: corrupted, checksum mismatch"
    return None
