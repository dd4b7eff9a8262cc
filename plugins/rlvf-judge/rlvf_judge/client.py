"""The server backend: any OpenAI-compatible endpoint (`vllm serve`, `python -m rlvf_judge.server`, a hosted API).

p(yes) is read from the top log-probs of one generated token (`max_tokens = 1`, temperature 0): the
probabilities of the returned tokens that spell a yes answer, against those that spell a no answer. A spelling
outside the returned top-k counts 0, so raise `top_logprobs` if the judge spreads its mass (vLLM's default cap
is 20: `vllm serve --max-logprobs N` raises it). A reply with neither answer in its top-k scores `None`.

Requests run concurrently up to `concurrency`, each with `timeout` seconds; connection errors, timeouts, 408,
429 and 5xx answers are retried `retries` times with exponential backoff (`backoff`, 2 x backoff, ...). Other
answers (a 400 or 404: a wrong model name, an unsupported option) fail at once with the server's message.
After a request has used up its retries the server counts as down for `cooldown` seconds: requests fail at once
instead of each waiting through its own retries.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from rlvf.api import RewardError

HELP = ("Start one (e.g. `vllm serve MODEL` or `python -m rlvf_judge.server --model PATH --port 8000`) or fix "
        "the `url` option of the judge reward")


def api_base(url: str) -> str:
    """The API root: `http://host:port/v1` from `http://host:port`, `http://host:port/` or the root itself."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"url {url!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
    return url if parts.path else url + "/v1"


class ServerJudge:
    def __init__(self, url: str, *, model: str | None, api: str, system_prompt: str | None, yes, no,
                 top_logprobs: int, timeout: float, retries: int, backoff: float, concurrency: int,
                 api_key: str | None = None, cooldown: float = 30.0):
        import httpx  # only with the server backend

        from rlvf_judge.judging import answer_variants

        if api not in ("chat", "completions"):
            raise ValueError(f"api must be 'chat' (/v1/chat/completions) or 'completions' (/v1/completions), "
                             f"got {api!r}")
        if timeout <= 0 or retries < 0 or backoff < 0 or concurrency <= 0 or top_logprobs <= 0:
            raise ValueError("timeout, concurrency and top_logprobs must be positive; retries and backoff >= 0")
        self.httpx = httpx
        self.base, self.api, self.system_prompt = api_base(url), api, system_prompt
        self.yes, self.no = set(answer_variants(yes)), set(answer_variants(no))
        if self.yes & self.no:
            raise ValueError(f"spellings {sorted(self.yes & self.no)} are both a yes and a no answer")
        self.top_logprobs, self.timeout, self.retries, self.backoff = top_logprobs, timeout, retries, backoff
        from rlvf.api import Retries

        self.retry_policy = Retries(retries=retries, backoff=backoff)
        self.concurrency, self.cooldown = concurrency, cooldown
        from rlvf.api import JUDGE_TOKEN_ENV, bearer_headers

        self.headers = bearer_headers(api_key or os.environ.get(JUDGE_TOKEN_ENV))
        self.metrics: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._down: tuple[float, str] | None = None  # (until when, why) after a request used up its retries
        self.model = model or self._served_model()
        self.description = f"server {self.base} (model {self.model}, {api} API)"

    # --- HTTP with retries ---

    def _fail(self, url: str, error: str, attempts: int) -> RewardError:
        message = (f"the judge server at {url} did not answer after {attempts} attempt(s): {error}. Is it running? "
                   f"{HELP}")
        with self._lock:
            self._down = (time.monotonic() + self.cooldown, message)
        return RewardError(message)

    def _check_down(self) -> None:
        with self._lock:
            if self._down is not None and time.monotonic() < self._down[0]:
                raise RewardError(self._down[1])

    def _classify(self, response) -> tuple[Any, str | None]:
        """(the JSON body, None) for a success, (None, why) for a retryable failure; raise for the rest."""
        if response.status_code == 200:
            try:
                return response.json(), None
            except ValueError:
                raise RewardError(f"the judge server at {response.request.url} answered with non-JSON: "
                                  f"{response.text[:200]!r}") from None
        from rlvf.api import retryable_status

        detail = f"HTTP {response.status_code}: {response.text[:300]}"
        if retryable_status(response.status_code):
            return None, detail
        if response.status_code in (401, 403):
            raise RewardError(f"the judge server at {response.request.url} wants a token ({detail}): set the judge "
                              "reward's `api_key` option or $RLVF_JUDGE_API_KEY to the server's --api-key")
        raise RewardError(f"the judge server at {response.request.url} rejected the request ({detail}); check the "
                          "judge reward's `model` and `api` options")

    def _failure(self, exc: Exception) -> str:
        """Why a request that got no answer (a timeout, a transport error) failed: worth retrying."""
        if isinstance(exc, self.httpx.TimeoutException):
            return f"no answer within {self.timeout:g} s (option `timeout`)"
        return f"{type(exc).__name__}: {exc}"

    def _count_retry(self) -> None:
        with self._lock:
            self.metrics["retries"] += 1

    def _served_model(self) -> str:
        """The first model the server lists (GET /models), with the same retries: also the reachability check."""
        from rlvf.api import RetriesExhausted, call_with_retries

        url = f"{self.base}/models"

        def send():
            try:
                return self._classify(self.httpx.get(url, headers=self.headers, timeout=self.timeout))
            except (self.httpx.TimeoutException, self.httpx.TransportError) as exc:
                return None, self._failure(exc)

        try:
            body = call_with_retries(send, self.retry_policy, on_retry=self._count_retry)
        except RetriesExhausted as exc:
            raise self._fail(url, exc.why, exc.attempts) from None
        models = [m.get("id") for m in body.get("data", []) if isinstance(m, dict) and m.get("id")]
        if not models:
            raise RewardError(f"the judge server at {url} lists no model; set the judge reward's `model` "
                              "option to the served model's name")
        return models[0]

    async def _post(self, client, semaphore, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        from rlvf.api import RetriesExhausted, acall_with_retries

        url = f"{self.base}{path}"

        async def send():
            self._check_down()  # another request found the server down: fail at once
            async with semaphore:
                try:
                    response = await client.post(url, json=payload, headers=self.headers)
                except (self.httpx.TimeoutException, self.httpx.TransportError) as exc:
                    return None, self._failure(exc)
            return self._classify(response)

        try:
            body = await acall_with_retries(send, self.retry_policy, on_retry=self._count_retry)
        except RetriesExhausted as exc:
            raise self._fail(url, exc.why, exc.attempts) from None
        with self._lock:
            self.metrics["requests"] += 1
            self._down = None
        return body

    async def _all(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        path = "/chat/completions" if self.api == "chat" else "/completions"
        semaphore = asyncio.Semaphore(self.concurrency)
        limits = self.httpx.Limits(max_connections=self.concurrency)
        async with self.httpx.AsyncClient(timeout=self.timeout, limits=limits) as client:
            return await asyncio.gather(*(self._post(client, semaphore, path, p) for p in payloads))

    def _payload(self, user_text: str, max_tokens: int, logprobs: bool) -> dict[str, Any]:
        from rlvf_judge.judging import plain_text

        payload: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "temperature": 0.0}
        if self.api == "chat":
            messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            payload["messages"] = [*messages, {"role": "user", "content": user_text}]
            if logprobs:
                payload |= {"logprobs": True, "top_logprobs": self.top_logprobs}
        else:
            payload["prompt"] = plain_text(user_text, self.system_prompt)
            if logprobs:
                payload["logprobs"] = self.top_logprobs
        return payload

    # --- what the reward asks ---

    def _top_logprobs(self, body: dict[str, Any]) -> dict[str, float]:
        try:
            logprobs = body["choices"][0]["logprobs"]
            if self.api == "chat":
                return {item["token"]: item["logprob"] for item in logprobs["content"][0]["top_logprobs"]}
            return dict(logprobs["top_logprobs"][0])
        except (KeyError, IndexError, TypeError):
            raise RewardError(f"the judge server at {self.base} returned no top log-probs (got "
                              f"{str(body)[:300]}); it must support `logprobs` on the {self.api} API") from None

    def _probability(self, top: dict[str, float]) -> float | None:
        p_yes = sum(math.exp(lp) for token, lp in top.items() if token in self.yes)
        p_no = sum(math.exp(lp) for token, lp in top.items() if token in self.no)
        if p_yes + p_no <= 0:
            with self._lock:
                self.metrics["missing_yes_no"] += 1
            return None
        return p_yes / (p_yes + p_no)

    async def yes_probabilities(self, user_texts: list[str]) -> list[float | None]:
        bodies = await self._all([self._payload(text, 1, True) for text in user_texts])
        return [self._probability(self._top_logprobs(body)) for body in bodies]

    async def replies(self, user_texts: list[str], max_new_tokens: int) -> list[str]:
        bodies = await self._all([self._payload(text, max_new_tokens, False) for text in user_texts])
        out = []
        for body in bodies:
            try:
                choice = body["choices"][0]
                out.append((choice["message"]["content"] if self.api == "chat" else choice["text"]) or "")
            except (KeyError, IndexError, TypeError):
                raise RewardError(f"the judge server at {self.base} returned no reply (got {str(body)[:300]})"
                                  ) from None
        return out

    def pop_metrics(self) -> dict[str, float]:
        with self._lock:
            metrics = {name: float(self.metrics.get(name, 0)) for name in ("requests", "retries", "missing_yes_no")}
            self.metrics.clear()
        return metrics
