"""Algorithm pieces as small named functions in registries; the trainer only looks them up by name
(`registry.algorithms.advantage[name]`, the registry of rlvf.plugins).

- registry: the registry of one kind, `algorithm(name, **declares)`, and the types entries take and return;
- advantages: advantage estimators (grpo, reinforce, rloo, reinforce_pp, gae);
- losses: policy losses, loss aggregations, KL estimators, value losses;
- presets: named [algorithm] settings (`algorithm = "ppo"`);
- builtin: the hook that registers the core's entries, like a plugin.

Importing this package imports no torch (the plugin registry is built from it).
"""

from rlvf.algorithms.registry import (  # noqa: F401  (the types the trainer and plugins use)
    ALGORITHM_KINDS,
    AdvantageInputs,
    Advantages,
    AlgorithmRegistry,
    BatchTotals,
    algorithm,
    call_with_options,
    declared,
)
