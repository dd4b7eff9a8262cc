"""The core's algorithm pieces, registered through the `register_algorithms` hook like any plugin's (entry point
`builtin-algorithms` of the rlvf distribution). References keep `rlvf plugins` from importing torch."""

from rlvf.api.hookspecs import hookimpl

BUILTIN_ALGORITHMS = {
    "advantage": {"grpo": "grpo_advantages", "reinforce": "reinforce_advantages", "rloo": "rloo_advantages",
                  "reinforce_pp": "reinforce_pp_advantages", "gae": "gae_advantages"},
    "policy_loss": {"clipped": "clipped_surrogate"},
    "loss_aggregation": {"seq_mean": "seq_mean", "token_mean": "token_mean", "constant_norm": "constant_norm"},
    "kl_estimator": {"k1": "kl_k1", "k2": "kl_k2", "k3": "kl_k3"},
    "value_loss": {"clipped": "clipped_value_loss"},
}


@hookimpl
def register_algorithms(register):
    for kind, entries in BUILTIN_ALGORITHMS.items():
        module = "rlvf.algorithms.advantages" if kind == "advantage" else "rlvf.algorithms.losses"
        for name, function in entries.items():
            register(kind, f"{module}:{function}", name=name)
