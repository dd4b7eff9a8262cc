"""`rlvf audit`: red-team a reward before training on it. Completions built from task rows by every registered
exploit family (rlvf.api.exploits; the core's in rlvf.audit.builtin) are scored by each reward of the mix, and a
family that scores above wrong answers is flagged."""
