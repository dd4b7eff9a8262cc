"""What every stage runs on: run directory, checkpoints, metrics, ranks, executors."""
