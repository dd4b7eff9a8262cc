"""Models: names to paths, loading, the completion forward pass, the critic."""
