"""rlvf-prm: the `prm` reward (per-step scores of a process reward model) and `rlvf train-prm`."""
