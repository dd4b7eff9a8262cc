"""The `rlvf` command line: a table of the commands plugins register through `register_commands` (the core's own
in rlvf.commands). This module only parses arguments and hands them to the command; it imports no torch."""

from __future__ import annotations

import argparse
import sys

from rlvf.commands import REFERENCE, load_stage_config
from rlvf.errors import ConfigError, PluginError, RlvfError


def _stage_sections(schema) -> list[str]:
    """The sections a stage schema adds to the shared base (e.g. [algorithm], [critic], [train] for RLConfig)."""
    from rlvf.config import StageConfig

    return [name for name in schema.model_fields if name not in StageConfig.model_fields]


def _add_stage_arguments(sub: argparse.ArgumentParser, schema) -> None:
    """A stage command's arguments: CONFIG and overrides (or --defaults), and resuming its run directory."""
    own = _stage_sections(schema)
    run_dir = next((f"{section}.output_dir" for section in own
                    if "output_dir" in getattr(schema.model_fields[section].annotation, "model_fields", {})),
                   "its run directory")
    sub.add_argument("config", nargs="?",
                     help=f"TOML config ({', '.join(f'[{name}]' for name in schema.model_fields)}; `rlvf init` "
                     "writes one for train)")
    sub.add_argument("overrides", nargs="*",
                     help=f"dotted overrides, e.g. {own[0] if own else 'model'}.KEY=VALUE")
    sub.add_argument("--defaults", action="store_true", help="run on every default when no config is given")
    sub.add_argument("--resume", action="store_true", help=f"continue from the last good checkpoint in {run_dir}")
    sub.add_argument("--force-resume", action="store_true",
                     help="with --resume: continue although the config differs from the run's config.json")


def build_parser(registry) -> argparse.ArgumentParser:
    """One subcommand per registered command, in registration order (the core's first)."""
    parser = argparse.ArgumentParser(prog="rlvf", description="RL for language models with plugin rewards",
                                     epilog=f"every config key: {REFERENCE}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = {}  # name -> its parser, which main() runs alone so that options may come anywhere
    for name, command in registry.commands.items():
        epilog = f"config keys: {REFERENCE}" if command.schema is not None else None
        sub = subcommands.add_parser(name, help=command.help, description=command.help, epilog=epilog)
        try:
            if command.schema is not None:
                _add_stage_arguments(sub, command.schema)
            if command.add_arguments is not None:
                command.add_arguments(sub)
        except Exception as exc:
            owner = registry.owner("command", name)
            raise PluginError(f"command '{name}' of {owner.describe() if owner else 'an unknown plugin'} failed to "
                              f"add its arguments: {type(exc).__name__}: {exc}") from exc
        sub.set_defaults(registered=command)
        parser.commands[name] = sub
    return parser


def _require_a_config(args) -> None:
    """A training command given nothing at all would start a long all-defaults run in the current directory."""
    if not args.config and not args.overrides and not args.defaults:
        raise ConfigError(f"`rlvf {args.command}` needs a config: `rlvf init` writes a commented starter one, "
                          f"or pass --defaults to run on every default (keys: {REFERENCE})")


def _load_stage_config(args, registry) -> None:
    """A stage command's config, validated against its schema; the sections of other commands' schemas are left
    to them. The sampler it names must be installed (checked before any model loads)."""
    command = args.registered
    _require_a_config(args)
    args.config_path = args.config
    args.config = load_stage_config(args, command.schema)
    if "sampling" in command.schema.model_fields:
        registry.sampler(args.config.sampling.sampler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    try:
        from rlvf.plugins import get_registry

        registry = get_registry()
        parser = build_parser(registry)
    except RlvfError as exc:  # a plugin that fails to load: no command can be trusted to run
        print(f"rlvf{' ' + own[0] if own and not own[0].startswith('-') else ''}: error: {exc}", file=sys.stderr)
        return 2
    if own and own[0] in parser.commands:  # options anywhere: `rlvf train t.toml --resume train.steps=5`
        args = parser.commands[own[0]].parse_intermixed_args(own[1:])
        args.command = own[0]
    else:
        args = parser.parse_args(own)
    if "--" in argv and not getattr(args, "passthrough_ok", False):
        parser.error(f"`rlvf {args.command}` takes no arguments after --")
    args.passthrough, args.registry = passthrough, registry
    if getattr(args, "config", None) and "=" in args.config:  # `rlvf score key=value`: no config file
        args.overrides.insert(0, args.config)
        args.config = None
    try:
        if args.registered.schema is not None:
            _load_stage_config(args, registry)
        return args.registered.run(args) or 0
    except RlvfError as exc:
        print(f"rlvf {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `rlvf tasks arithmetic | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
