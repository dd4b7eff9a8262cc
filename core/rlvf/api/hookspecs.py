"""The hooks a plugin may implement. Each is called once per plugin with a `register` callable."""

import pluggy

hookspec = pluggy.HookspecMarker("rlvf")
hookimpl = pluggy.HookimplMarker("rlvf")


@hookspec
def register_rewards(register):
    """Register reward functions.

    `register(reward, name=None, description=None)` where `reward` is either
    - a function with the TRL batch signature `reward(prompts, completions, **columns)` returning one
      `float | None` per completion (sync or async), or
    - a class whose constructor takes the reward's options as keyword arguments and whose instances
      are such functions.
    `name` defaults to the function's or class's `__name__`; `description` to its docstring's first line.
    """


@hookspec
def register_tasks(register):
    """Register tasks: `register(task)` with an `rlvf.api.tasks.Task` instance."""
