"""rlvf-judge: the `judge` reward (an LLM judge's p(yes), or its rubric ratings) and a small OpenAI-compatible
server for a local HF model (`python -m rlvf_judge.server`)."""
