"""A command of the `rlvf` command line, as a plugin registers it (hook `register_commands`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


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
