"""The `judge` reward: an LLM judge's p(yes) that a completion is good, or its weighted rubric ratings."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

from rlvf_judge.rubric import DEFAULT_RUBRIC_TEMPLATE, check_rubric, rubric_score

METRIC_NAMES = ("judged", "cache_hits", "unparsable")


class JudgeReward:
    """An LLM judge's p(yes) / (p(yes) + p(no)) that the completion is good (or its weighted rubric ratings).

    Backends: a local causal LM (`model`: an embedded name, HF id or directory, e.g. a `rlvf train-judge`
    output; default the embedded SmolLM2-135M-Instruct), or, with `url`, any OpenAI-compatible server (`model`
    then names the served model; default: the first it lists).

    Options:
    - `template`: the judge's user message, with `{prompt}` (a chat prompt's last user message), `{completion}`
      and any column of the row (e.g. `{answer}`); default, per row: rlvf_judge.judging.REFERENCE_TEMPLATE when
      the row has an `answer`, else DEFAULT_TEMPLATE (both quote the question and the response in tags). Filled-in
      texts never contain those tags (`</response>` becomes `&lt;/response&gt;`), whatever the template.
      `system_prompt`; `chat` (use the chat template; none: if the judge's
      tokenizer has one; the server backend's `api = "chat"` or `"completions"` decides there); `yes`, `no`: the
      answer words.
    - `rubric = { aspect = weight, ... }`: ask for "aspect: score" lines on `scale` ([low, high], mapped to 0..1)
      with `rubric_template` (`{aspects}`, `{low}`, `{high}` besides the above); the reward is the weighted mean;
      a reply missing an aspect or out of scale scores None (left out of the mix) and counts as `unparsable`.
      Replies are greedy, at most `max_new_tokens`.
    - local: `batch_size`, `max_length` (tokens; a longer judge text keeps its end), `dtype`, `device`.
    - server: `api`, `top_logprobs`, `timeout` (s per request), `retries`, `backoff` (s, doubled each retry),
      `concurrency` (requests in flight), `api_key`.
    - `cache_size`: judgements kept, keyed by the judge's whole user message (the chosen template filled in).
    """

    def __init__(self, model: str | None = None, url: str | None = None, template: str | None = None,
                 system_prompt: str | None = None, chat: bool | None = None, yes: Sequence[str] = ("yes",),
                 no: Sequence[str] = ("no",), rubric: dict[str, float] | None = None,
                 scale: Sequence[float] = (1, 5), rubric_template: str | None = None, max_new_tokens: int = 48,
                 batch_size: int = 16, max_length: int = 2048, dtype: str = "auto", device: str = "auto",
                 api: str = "chat", top_logprobs: int = 20, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5, concurrency: int = 8, api_key: str | None = None, cache_size: int = 100_000):
        if batch_size <= 0 or max_length <= 0 or max_new_tokens <= 0 or cache_size < 0:
            raise ValueError("batch_size, max_length and max_new_tokens must be positive, cache_size >= 0")
        self.rubric = None
        if rubric is not None:
            self.rubric, self.scale = check_rubric(rubric, scale)
        # None: chosen per row by rlvf_judge.judging.choose_template (as `rlvf train-judge` chooses it)
        self.template = (rubric_template or DEFAULT_RUBRIC_TEMPLATE) if self.rubric else template
        self.max_new_tokens, self.cache_size = max_new_tokens, cache_size
        if url:
            from rlvf_judge.client import ServerJudge

            if chat is not None:
                raise ValueError("`chat` is for the local backend; with a server choose `api = \"chat\"` or "
                                 "`api = \"completions\"`")
            self.backend = ServerJudge(url, model=model, api=api, system_prompt=system_prompt, yes=yes, no=no,
                                       top_logprobs=top_logprobs, timeout=timeout, retries=retries, backoff=backoff,
                                       concurrency=concurrency, api_key=api_key)
        else:
            from rlvf_judge.local import LocalJudge

            self.backend = LocalJudge(model or "smollm2-135m", chat=chat, system_prompt=system_prompt, yes=yes, no=no,
                                      batch_size=batch_size, max_length=max_length, dtype=dtype, device=device)
        self.is_async = bool(url)
        self._cache: OrderedDict[str, float | None] = OrderedDict()
        self._metrics: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _user_texts(self, prompts, completions, columns) -> list[str]:
        from rlvf_judge.judging import judge_user_text

        extra = {}
        if self.rubric:
            low, high = self.scale
            extra = {"aspects": ", ".join(self.rubric), "low": f"{low:g}", "high": f"{high:g}"}
        return [judge_user_text(self.template, prompt, completion,
                                    {key: values[i] for key, values in columns.items()}, **extra)
                for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True))]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Sequence[Any]):
        """One score per completion; a coroutine of them with the server backend (the mix awaits it)."""
        columns = {k: v for k, v in columns.items() if k != "completion_ids"}
        texts = self._user_texts(list(prompts), list(completions), columns)
        scores: list[float | None] = [None] * len(texts)
        todo: dict[str, list[int]] = {}
        with self._lock:
            for i, text in enumerate(texts):
                if text in self._cache:
                    self._cache.move_to_end(text)
                    scores[i] = self._cache[text]
                    self._metrics["cache_hits"] += 1
                    self._metrics["unparsable"] += bool(self.rubric) and scores[i] is None
                else:
                    todo.setdefault(text, []).append(i)
            self._metrics["judged"] += len(texts)
        unique = list(todo)
        if not unique:
            return self._finish_async(scores) if self.is_async else scores
        if self.is_async:
            return self._score_async(unique, todo, scores)
        return self._store(unique, self._judge_local(unique), todo, scores)

    def _judge_local(self, texts: list[str]) -> list[float | None]:
        if self.rubric:
            return [rubric_score(reply, self.rubric, self.scale)
                    for reply in self.backend.replies(texts, self.max_new_tokens)]
        return self.backend.yes_probabilities(texts)

    async def _score_async(self, unique, todo, scores):
        if self.rubric:
            replies = await self.backend.replies(unique, self.max_new_tokens)
            values = [rubric_score(reply, self.rubric, self.scale) for reply in replies]
        else:
            values = await self.backend.yes_probabilities(unique)
        return self._store(unique, values, todo, scores)

    @staticmethod
    async def _finish_async(scores):
        return scores

    def _store(self, unique: list[str], values: list[float | None], todo: dict[str, list[int]], scores):
        with self._lock:
            for text, value in zip(unique, values, strict=True):
                if self.rubric and value is None:
                    self._metrics["unparsable"] += len(todo[text])
                for i in todo[text]:
                    scores[i] = value
                if self.cache_size:
                    self._cache[text] = value
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return scores

    def pop_metrics(self) -> dict[str, float]:
        """Counters since the last call: `judged` samples, `cache_hits`, `unparsable` rubric replies; with a server,
        `requests`, `retries` and `missing_yes_no` (neither answer among the top log-probs)."""
        with self._lock:
            metrics = {name: float(self._metrics.get(name, 0)) for name in METRIC_NAMES}
            self._metrics.clear()
        pop = getattr(self.backend, "pop_metrics", None)
        return metrics | (pop() if pop else {})
