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


@hookspec
def register_environments(register):
    """Register multi-turn environments (`[task] environment = NAME`): `register(environment)` with an
    `rlvf.api.Environment` instance (rlvf.api.environments)."""


@hookspec
def register_algorithms(register):
    """Register algorithm pieces for the RL trainer ([algorithm] and [critic] config keys name them).

    `register(kind, function, name=None)` with `kind` one of
    - "advantage": `(AdvantageInputs, **options) -> advantages [B, T]` or `Advantages` (with returns, for a critic);
    - "policy_loss": `(logprobs, old_logprobs, advantages, mask, **options) -> (per-token loss [B, T], metrics)`;
    - "loss_aggregation": `(per-token loss, mask, BatchTotals) -> scalar`;
    - "kl_estimator": `(logprobs, ref_logprobs) -> per-token KL [B, T]`;
    - "value_loss": `(values, old_values, returns, mask, clip) -> (per-token loss [B, T], metrics)`.
    `function` may also be a reference "package.module:attribute", imported on first use, so that listing plugins
    does not import torch. `name` defaults to the name given by `rlvf.api.algorithm(name)` on the function, else its
    `__name__`. What an entry needs is declared on the function (`algorithm(name, needs_values=True)`:
    the trainer builds a critic; `needs_groups=True`: it needs train.group_size >= 2).
    """


@hookspec
def register_samplers(register):
    """Register samplers (`sampling.sampler = NAME`).

    `register(name, factory, description=None)` where
    `factory(config, model, tokenizer, *, path, seed, batch_size)` returns an `rlvf.api.Sampler`: `config` is the
    [sampling] section (SamplingConfig), `path` the directory the model was loaded from, `batch_size` the
    sequences to decode together. `description` defaults to the factory's docstring's first line.
    """


@hookspec
def register_commands(register):
    """Register `rlvf` commands: `register(command)` with an `rlvf.api.Command`.

    A command with a `schema` (a subclass of rlvf.api.StageConfig) is a stage command: the CLI gives it a config
    file, key=value overrides, --defaults, --resume and --force-resume, and passes the validated config as
    `args.config`.
    """


@hookspec
def register_exploits(register):
    """Register exploit families for `rlvf audit` (rlvf.api.exploits).

    `register(name, build, description=None, role="exploit")`: `build(audit_row)` returns completion texts built
    from one task row ([] where the family does not apply); `role` is "exploit" (must score no higher than a wrong
    answer), "gold" (the row's right answer) or "wrong" (a plainly wrong one, the baseline). `description` defaults
    to the builder's docstring's first line.
    """
