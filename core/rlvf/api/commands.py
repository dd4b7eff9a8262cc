"""A command of the `rlvf` command line, as a plugin registers it (hook `register_commands`)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Command:
    """`rlvf NAME ...`: `run(args)` returns the exit status (None: 0); an `rlvf.api.ConfigError` (any RlvfError)
    it raises is printed as one line, exit status 2.

    `add_arguments(parser)` adds the command's own arguments to its argparse parser. With `schema` (a subclass of
    rlvf.api.StageConfig) it is a stage command: the CLI adds a positional TOML `config` file (optional),
    `overrides` (key=value ...), `--defaults`, `--resume` and `--force-resume`, requires a config or --defaults,
    and calls `run` with `args.config` the validated config (`args.config_path`: the file, or None).
    """

    name: str
    help: str
    run: Callable[[argparse.Namespace], int | None]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    schema: type | None = None


def training_stage(name: str, help: str, schema: type, stage: str, summary: Callable[[dict[str, Any]], list[str]],
                   saved_as: str = "final model") -> Command:
    """The stage command of a training stage: `stage` ("package.module:function", imported when the command runs,
    so listing commands stays cheap) is called as `function(config, registry, resume=..., force_resume=...)` and
    returns results as rlvf.api.train_loop does; the command prints `summary(results)`, the held-out
    before/after table and where the model was saved (`saved_as: path`)."""
    module, _, function = stage.partition(":")

    def run(args: argparse.Namespace) -> None:
        from rlvf.commands import print_stage_results

        results = getattr(importlib.import_module(module), function)(
            args.config, args.registry, resume=args.resume or args.force_resume, force_resume=args.force_resume)
        print_stage_results(results, summary(results), saved_as)

    return Command(name, help, run, schema=schema)
