"""The local backend: a causal LM in this process (any HF id or directory, or an embedded model name)."""

from __future__ import annotations


class LocalJudge:
    """p(yes) from one batched forward pass (rlvf_judge.judging), and greedy replies for rubric ratings."""

    def __init__(self, model: str, *, chat: bool | None, system_prompt: str | None, yes, no, batch_size: int,
                 max_length: int, dtype: str = "auto", device: str = "auto"):
        from rlvf.api import ModelConfig, load_policy
        from rlvf_judge.judging import uses_chat, yes_no_ids

        policy = load_policy(ModelConfig(name=model, dtype=dtype))
        self.model, self.tokenizer, self.path = policy.model, policy.tokenizer, policy.path
        if device != "auto":
            self.model.to(device)
        self.model.eval()
        self.chat = uses_chat(self.tokenizer, chat)
        self.system_prompt = system_prompt
        self.yes_ids, self.no_ids = yes_no_ids(self.tokenizer, yes, no)
        self.batch_size, self.max_length = batch_size, max_length
        self.description = f"local model {self.path}"

    def _encode(self, user_texts: list[str]) -> list[list[int]]:
        from rlvf_judge.judging import encode_judge, judge_text

        texts = [judge_text(self.tokenizer, text, self.system_prompt, self.chat) for text in user_texts]
        return encode_judge(self.tokenizer, texts, self.chat, self.max_length)

    def yes_probabilities(self, user_texts: list[str]) -> list[float | None]:
        from rlvf_judge.judging import judge_probabilities

        probabilities, _ = judge_probabilities(self.model, self._encode(user_texts), self.tokenizer.pad_token_id,
                                               self.yes_ids, self.no_ids, self.batch_size)
        return probabilities

    def replies(self, user_texts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy replies (rubric ratings), decoded without special tokens."""
        from rlvf.api import SamplingParams, model_sampler

        sampler = model_sampler(self.model, self.tokenizer, batch_size=self.batch_size)
        samples = sampler.sample(self._encode(user_texts), SamplingParams(temperature=0.0,
                                                                          max_new_tokens=max_new_tokens))
        return samples.texts
