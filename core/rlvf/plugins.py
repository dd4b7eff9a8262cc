"""Plugin discovery: every reward, task, algorithm, sampler, command and exploit family reaches the core through
the `rlvf` entry-point group, the core's own too (its distribution declares `builtin-*` entry points, as pytest
registers its own plugins), so a built-in has no path a plugin lacks.

Each entry point names a module (or object) with `@hookimpl` functions. We load entry points ourselves
instead of `PluginManager.load_setuptools_entrypoints` so that an import failure, an invalid hook or a
hook that raises is reported with the distribution and entry point at fault.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pluggy

from rlvf.algorithms.registry import ALGORITHM_KINDS, AlgorithmRegistry
from rlvf.api import hookspecs
from rlvf.api.commands import Command
from rlvf.api.environments import Environment
from rlvf.api.exploits import ROLES, ExploitFamily
from rlvf.api.rewards import RewardSpec
from rlvf.api.tasks import Task
from rlvf.errors import ConfigError, PluginError

ENTRY_POINT_GROUP = "rlvf"
PLUGIN_FILTER_ENV = "RLVF_PLUGINS"
CORE_DISTRIBUTION = "rlvf"  # its entry points (the built-ins) load whatever RLVF_PLUGINS says


@dataclass
class PluginInfo:
    """One loaded plugin: where it came from and what it registered."""

    name: str  # entry point name
    distribution: str
    version: str
    entry_point: str  # "name = module:attr", for error messages
    rewards: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    environments: list[str] = field(default_factory=list)
    algorithms: list[str] = field(default_factory=list)  # "kind:name"
    samplers: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    exploits: list[str] = field(default_factory=list)  # exploit families for `rlvf audit`

    def describe(self) -> str:
        return f"plugin '{self.name}' (distribution {self.distribution} {self.version}, entry point {self.entry_point})"


@dataclass
class SamplerSpec:
    """A registered sampler: `factory(config, model, tokenizer, *, path, seed, batch_size)` -> Sampler."""

    name: str
    factory: Any
    description: str
    plugin: str  # the distribution that registered it


@dataclass
class Algorithms:
    """The algorithm registries by kind (hook register_algorithms): `registry.algorithms.advantage["grpo"]`."""

    advantage: AlgorithmRegistry = field(default_factory=lambda: AlgorithmRegistry(ALGORITHM_KINDS["advantage"]))
    policy_loss: AlgorithmRegistry = field(default_factory=lambda: AlgorithmRegistry(ALGORITHM_KINDS["policy_loss"]))
    loss_aggregation: AlgorithmRegistry = field(
        default_factory=lambda: AlgorithmRegistry(ALGORITHM_KINDS["loss_aggregation"]))
    kl_estimator: AlgorithmRegistry = field(
        default_factory=lambda: AlgorithmRegistry(ALGORITHM_KINDS["kl_estimator"]))
    value_loss: AlgorithmRegistry = field(default_factory=lambda: AlgorithmRegistry(ALGORITHM_KINDS["value_loss"]))

    def of_kind(self, kind: str) -> AlgorithmRegistry:
        if kind not in ALGORITHM_KINDS:
            raise PluginError(f"unknown algorithm kind '{kind}'; the kinds are: {', '.join(ALGORITHM_KINDS)}")
        return getattr(self, kind)

    def describe(self) -> dict[str, list[str]]:
        """What each registry holds (for `rlvf algorithms`)."""
        return {self.of_kind(kind).kind: sorted(self.of_kind(kind)) for kind in ALGORITHM_KINDS}


@dataclass
class Registry:
    """Everything the installed plugins provide, by name."""

    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    rewards: dict[str, RewardSpec] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    environments: dict[str, Environment] = field(default_factory=dict)
    algorithms: Algorithms = field(default_factory=Algorithms)
    samplers: dict[str, SamplerSpec] = field(default_factory=dict)
    commands: dict[str, Command] = field(default_factory=dict)
    exploits: dict[str, ExploitFamily] = field(default_factory=dict)  # in registration order (the core's first)
    manager: pluggy.PluginManager = field(default_factory=lambda: _new_manager())
    _owner: dict[tuple[str, str], PluginInfo] = field(default_factory=dict)

    def reward(self, name: str) -> RewardSpec:
        """A registered reward, or one given by reference (`my_rewards.py:fn`, `package.module:fn`)."""
        if ":" in name:
            if name not in self.rewards:
                self.rewards[name] = reward_reference(name)
            return self.rewards[name]
        return _installed(self.rewards, name, "reward", "Install the plugin that provides it (see `rlvf plugins`).")

    def task(self, name: str) -> Task:
        return _installed(self.tasks, name, "task", "Install the plugin that provides it, or declare a dataset task "
                          "in the config.")

    def environment(self, name: str) -> Environment:
        return _installed(self.environments, name, "environment", "Install the plugin that provides it (see "
                          "`rlvf plugins`).")

    def sampler(self, name: str) -> SamplerSpec:
        if name not in self.samplers:
            raise ConfigError(f"sampling.sampler = '{name}' is not an installed sampler; installed samplers: "
                              f"{', '.join(sorted(self.samplers)) or 'none'} (see `rlvf plugins`)")
        return self.samplers[name]

    def owner(self, kind: str, name: str) -> PluginInfo | None:
        """The plugin that registered `name` (kind "reward", "task", "environment", "sampler", "command",
        "exploit family", or an algorithm kind)."""
        return self._owner.get((kind, name))

    def _claim(self, kind: str, name: str, plugin: PluginInfo) -> None:
        previous = self._owner.get((kind, name))
        if previous is not None:
            raise PluginError(
                f"{kind} '{name}' is registered twice: by {previous.describe()} and by {plugin.describe()}. "
                f"Uninstall one of them, or restrict loading with {PLUGIN_FILTER_ENV}."
            )
        self._owner[(kind, name)] = plugin

    def add_plugin(self, plugin_object: Any, info: PluginInfo) -> None:
        """Register one plugin object (a module or anything with hookimpls) and run its hooks."""
        if info.name in self.plugins:
            raise PluginError(f"two plugins use the name '{info.name}': "
                              f"{self.plugins[info.name].describe()} and {info.describe()}")
        try:
            self.manager.register(plugin_object, name=info.name)
            self.manager.check_pending()  # a misspelt hook name would otherwise be silently ignored
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{info.describe()} has an invalid hook: {exc}") from exc
        self.plugins[info.name] = info

        def register_reward(reward, name=None, description=None):
            spec = RewardSpec.from_callable(reward, name=name, description=description, plugin=info.distribution)
            self._claim("reward", spec.name, info)
            self.rewards[spec.name] = spec
            info.rewards.append(spec.name)

        def register_task(task):
            if not isinstance(task, Task):
                raise PluginError(f"{info.describe()} registered {task!r} as a task; expected an rlvf.api.tasks.Task")
            self._claim("task", task.name, info)
            task.plugin = info.distribution
            self.tasks[task.name] = task
            info.tasks.append(task.name)

        def register_environment(environment):
            if not isinstance(environment, Environment):
                raise PluginError(f"{info.describe()} registered {environment!r} as an environment; expected an "
                                  "rlvf.api.Environment")
            self._claim("environment", environment.name, info)
            environment.plugin = info.distribution
            self.environments[environment.name] = environment
            info.environments.append(environment.name)

        def register_algorithm(kind, function, name=None):
            entries = self.algorithms.of_kind(kind)
            name = name or entries.default_name(function)
            self._claim(entries.kind, name, info)
            entries.add(name, function)
            info.algorithms.append(f"{kind}:{name}")

        def register_sampler(name, factory, description=None):
            if not callable(factory):
                raise PluginError(f"{info.describe()} registered sampler '{name}' with {factory!r}; expected a "
                                  "factory(config, model, tokenizer, *, path, seed, batch_size)")
            self._claim("sampler", name, info)
            description = description or ((factory.__doc__ or "").strip().splitlines() or [""])[0]
            self.samplers[name] = SamplerSpec(name, factory, description, plugin=info.distribution)
            info.samplers.append(name)

        def register_command(command):
            if not isinstance(command, Command):
                raise PluginError(f"{info.describe()} registered {command!r} as a command; expected an "
                                  "rlvf.api.Command")
            self._claim("command", command.name, info)
            self.commands[command.name] = command
            info.commands.append(command.name)

        def register_exploit(name, build, description=None, role="exploit"):
            if not callable(build):
                raise PluginError(f"{info.describe()} registered exploit family '{name}' with {build!r}; expected "
                                  "a build(audit_row) returning completion texts")
            if role not in ROLES:
                raise PluginError(f"{info.describe()} registered exploit family '{name}' with role {role!r}; the "
                                  f"roles are: {', '.join(ROLES)}")
            self._claim("exploit family", name, info)
            description = description or ((build.__doc__ or "").strip().splitlines() or [""])[0]
            self.exploits[name] = ExploitFamily(name, build, description, role, plugin=info.distribution)
            info.exploits.append(name)

        hooks = (("register_rewards", register_reward), ("register_tasks", register_task),
                 ("register_environments", register_environment),
                 ("register_algorithms", register_algorithm), ("register_samplers", register_sampler),
                 ("register_commands", register_command), ("register_exploits", register_exploit))
        for hook_name, register in hooks:
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                if impl.plugin_name != info.name:
                    continue
                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(
                        f"{info.describe()}: hook {hook_name} raised {type(exc).__name__}: {exc}") from exc


def _installed(table: dict[str, Any], name: str, kind: str, hint: str) -> Any:
    if name not in table:
        raise PluginError(f"unknown {kind} '{name}'. Installed {kind}s: {', '.join(sorted(table)) or 'none'}. {hint}")
    return table[name]


def reward_reference(reference: str) -> RewardSpec:
    """A reward given by reference for quick experiments, without packaging a plugin: `path/to/file.py:name`
    (a path relative to the current directory) or `package.module:name` (importable)."""
    target, _, attribute = reference.rpartition(":")
    where = f"reward reference '{reference}'"
    if not target or not attribute.isidentifier():
        raise PluginError(f"{where}: expected FILE.py:NAME or MODULE:NAME")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser()
            if not path.is_file():
                raise PluginError(f"{where}: there is no file {path} (relative to {Path.cwd()})")
            module_name = f"rlvf_reward_reference_{abs(hash(str(path.resolve())))}"
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # so that the reward pickles (Ray) and dataclasses work
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"{where}: importing {target} raised {type(exc).__name__}: {exc}") from exc
    if not hasattr(module, attribute):
        raise PluginError(f"{where}: {target} has no '{attribute}'")
    return RewardSpec.from_callable(getattr(module, attribute), name=attribute, plugin=f"reference {reference}")


def _new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
    manager.add_hookspecs(hookspecs)
    return manager


def _allowed_plugins() -> set[str] | None:
    """Names allowed by RLVF_PLUGINS (entry point or distribution names); None means all. The core's own
    entry points are never filtered out."""
    value = os.environ.get(PLUGIN_FILTER_ENV)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _distribution_name(entry_point) -> str:
    return entry_point.dist.metadata["Name"] if entry_point.dist is not None else "<unknown distribution>"


def load_registry() -> Registry:
    """Load every installed plugin (as filtered by RLVF_PLUGINS) into a fresh registry."""
    registry = Registry()
    allowed = _allowed_plugins()
    # the core's built-ins first, so that a clash names the built-in as the first registrant
    entry_points = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                          key=lambda ep: (_distribution_name(ep) != CORE_DISTRIBUTION, ep.name))
    for entry_point in entry_points:
        dist, dist_name = entry_point.dist, _distribution_name(entry_point)
        core = dist_name == CORE_DISTRIBUTION
        if allowed is not None and not core and entry_point.name not in allowed and dist_name not in allowed:
            continue
        info = PluginInfo(
            name=entry_point.name,
            distribution=dist_name,
            version=dist.version if dist is not None else "?",
            entry_point=f"{entry_point.name} = {entry_point.value}",
        )
        try:
            plugin_object = entry_point.load()
        except Exception as exc:
            raise PluginError(f"{info.describe()} failed to import: {type(exc).__name__}: {exc}") from exc
        registry.add_plugin(plugin_object, info)
    return registry


@cache
def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    return load_registry()
