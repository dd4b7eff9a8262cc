"""The training and data stages: RL, SFT, DPO, pairs, evaluation."""
