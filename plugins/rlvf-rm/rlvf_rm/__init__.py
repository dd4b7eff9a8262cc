"""rlvf-rm: the `reward_model` reward (a learned reward model as an rlvf reward)."""
