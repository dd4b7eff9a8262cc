"""The plugin API: everything a plugin (a reward, a task, a stage or a command) may import from rlvf.

    from rlvf.api import hookimpl, completion_text, RewardError

Names resolve on first use, so `import rlvf.api` stays cheap (no torch) for reward workers. Anything else in
rlvf is internal and may change between versions; a plugin needing more asks for it to be declared here.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it
_EXPORTS = {
    "hookimpl": "rlvf.api.hookspecs",
    "ConfigError": "rlvf.errors", "PluginError": "rlvf.errors", "RewardError": "rlvf.errors",
    "completion_text": "rlvf.api.text", "reward_completions": "rlvf.api.text",
    "is_conversational": "rlvf.api.text", "last_boxed": "rlvf.api.text",
    "Task": "rlvf.api.tasks", "DatasetTask": "rlvf.api.tasks", "fill_template": "rlvf.api.tasks",
    "is_messages": "rlvf.api.tasks", "split_held_out": "rlvf.api.tasks", "task_from_config": "rlvf.api.tasks",
    "RewardMix": "rlvf.api.rewards", "MixResult": "rlvf.api.rewards", "mix_from_config": "rlvf.api.rewards",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"rlvf.api has no '{name}' (the plugin API is: {', '.join(__all__)})")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
