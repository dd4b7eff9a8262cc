"""A small OpenAI-compatible server for a local HF causal LM: enough of the API for an LLM judge.

    python -m rlvf_judge.server --model PATH_OR_NAME [--host 127.0.0.1] [--port 8000] [--served-model-name NAME]

Endpoints: `GET /v1/models`, `GET /health`, `POST /v1/completions` and `POST /v1/chat/completions` with
`max_tokens`, `temperature` (0: greedy), `top_p`, `seed`, `stop` and log-probs (`logprobs` / `top_logprobs` as
in the OpenAI API: the chosen token's log-prob and the top ones at each position, from the model's raw
distribution, as vLLM reports them). One request runs at a time (the rest wait); `n` must be 1, and there is no
streaming. Chat requests go through the model's chat template with the assistant turn opened, text prompts are
tokenised as they are: the same tokens the `judge` reward's local backend reads, so both backends give the
same p(yes). For production use `vllm serve`, which speaks the same API.

`--port 0` picks a free port; the first line printed says where the server listens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RequestError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _int(body: dict, key: str, default: int | None, low: int, high: int | None = None) -> int | None:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise RequestError(f"'{key}' must be an integer in [{low}, {high if high is not None else '...'}], "
                           f"got {value!r}")
    return value


class Engine:
    """The model, its tokenizer, and a decode loop that returns each token's log-prob and the top ones."""

    def __init__(self, model: str, served_name: str | None = None, dtype: str = "auto", max_logprobs: int = 20):
        from rlvf.api import ModelConfig, load_policy

        policy = load_policy(ModelConfig(name=model, dtype=dtype))
        self.model, self.tokenizer = policy.model.eval(), policy.tokenizer
        self.name = served_name or model
        self.max_logprobs = max_logprobs
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        self.eos_ids = {self.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        self.max_length = getattr(self.model.config, "max_position_embeddings", None) or 4096
        self.lock = threading.Lock()

    def encode_chat(self, messages: Any) -> list[int]:
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m
                                                                      for m in messages):
            raise RequestError("'messages' must be a non-empty list of {role, content} objects")
        if not getattr(self.tokenizer, "chat_template", None):
            raise RequestError(f"model {self.name} has no chat template: use /v1/completions")
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_text(self, prompt: Any) -> list[int]:
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise RequestError("'prompt' must be a string (one prompt per request)")
        return self.tokenizer(prompt)["input_ids"]

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode([token])

    def generate(self, ids: list[int], max_tokens: int, temperature: float, top_p: float, top_k: int,
                 stop: list[str], seed: int | None) -> dict[str, Any]:
        """{"tokens", "logprobs", "top" (per position: [(token, logprob)]), "text", "finish_reason"}."""
        import torch

        if not ids:
            raise RequestError("the prompt is empty")
        max_tokens = min(max_tokens, self.max_length - len(ids))
        if max_tokens <= 0:
            raise RequestError(f"the prompt has {len(ids)} tokens; the model's context is {self.max_length}")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        tokens, logprobs, tops = [], [], []
        finish, text = "length", ""
        with self.lock, torch.inference_mode():
            input_ids, cache = torch.tensor([ids], device=self.model.device), None
            for _ in range(max_tokens):
                out = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
                cache = out.past_key_values
                logits = out.logits[0, -1].float()
                log_probs = torch.log_softmax(logits, dim=-1)
                if temperature <= 0:
                    token = int(logits.argmax())
                else:
                    probs = torch.softmax(logits / temperature, dim=-1)
                    if top_p < 1.0:
                        sorted_probs, order = probs.sort(descending=True)
                        keep = (sorted_probs.cumsum(0) - sorted_probs) < top_p
                        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
                    token = int(torch.multinomial(probs, 1, generator=generator))
                tokens.append(token)
                logprobs.append(float(log_probs[token]))
                if top_k:
                    values, indices = log_probs.topk(top_k)
                    tops.append(list(zip(indices.tolist(), values.tolist(), strict=True)))
                if token in self.eos_ids:
                    finish = "stop"
                    break
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                hits = [text.find(s) for s in stop if s and s in text]
                if hits:
                    text, finish = text[: min(hits)], "stop"
                    break
                input_ids = torch.tensor([[token]], device=self.model.device)
        if finish == "stop" and tokens and tokens[-1] in self.eos_ids:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return {"tokens": tokens, "logprobs": logprobs, "top": tops, "text": text, "finish_reason": finish}

    # --- the two APIs ---

    def _sampling(self, body: dict, default_max_tokens: int) -> dict[str, Any]:
        if _int(body, "n", 1, 1) != 1:
            raise RequestError("only n = 1 is supported")
        if body.get("stream"):
            raise RequestError("streaming is not supported")
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise RequestError("'stop' must be a string or a list of strings")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        body = {**body, "max_tokens": default_max_tokens if max_tokens is None else max_tokens}
        try:
            temperature = 1.0 if body.get("temperature") is None else float(body["temperature"])
            top_p = 1.0 if body.get("top_p") is None else float(body["top_p"])
        except (TypeError, ValueError):
            raise RequestError("'temperature' and 'top_p' must be numbers") from None
        return {"max_tokens": _int(body, "max_tokens", default_max_tokens, 1), "temperature": temperature,
                "top_p": top_p, "stop": stop, "seed": _int(body, "seed", None, -(2 ** 63))}

    def _check_model(self, body: dict) -> None:
        if body.get("model") not in (None, self.name):
            raise RequestError(f"the model '{body.get('model')}' does not exist; this server serves '{self.name}'",
                               status=404)

    def chat(self, body: dict) -> dict[str, Any]:
        self._check_model(body)
        ids = self.encode_chat(body.get("messages"))
        top_k = 0
        if body.get("logprobs"):
            top_k = _int(body, "top_logprobs", 0, 0, self.max_logprobs)
        out = self.generate(ids, top_k=top_k, **self._sampling(body, self.max_length))
        logprobs = None
        if body.get("logprobs"):
            logprobs = {"content": [
                {**self._entry(token, lp), "top_logprobs": [self._entry(t, v) for t, v in (out["top"][i] if top_k
                                                                                          else [])]}
                for i, (token, lp) in enumerate(zip(out["tokens"], out["logprobs"], strict=True))]}
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": out["text"]},
                             "logprobs": logprobs, "finish_reason": out["finish_reason"]}],
                "usage": self._usage(ids, out)}

    def completions(self, body: dict) -> dict[str, Any]:
        self._check_model(body)
        ids = self.encode_text(body.get("prompt"))
        top_k = _int(body, "logprobs", None, 0, self.max_logprobs)
        out = self.generate(ids, top_k=top_k or 0, **self._sampling(body, 16))
        logprobs = None
        if top_k is not None:
            texts = [self.token_text(t) for t in out["tokens"]]
            offsets, position = [], 0
            for piece in texts:
                offsets.append(position)
                position += len(piece)
            logprobs = {"tokens": texts, "token_logprobs": out["logprobs"], "text_offset": offsets,
                        "top_logprobs": [{self.token_text(t): v for t, v in top} for top in out["top"]] if top_k
                        else None}
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.name,
                "choices": [{"index": 0, "text": out["text"], "logprobs": logprobs,
                             "finish_reason": out["finish_reason"]}],
                "usage": self._usage(ids, out)}

    def _entry(self, token: int, logprob: float) -> dict[str, Any]:
        text = self.token_text(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    @staticmethod
    def _usage(ids: list[int], out: dict[str, Any]) -> dict[str, int]:
        return {"prompt_tokens": len(ids), "completion_tokens": len(out["tokens"]),
                "total_tokens": len(ids) + len(out["tokens"])}

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": 0, "owned_by": "rlvf",
                                            "max_model_len": self.max_length}]}


def make_server(engine: Engine, host: str = "127.0.0.1", port: int = 8000, quiet: bool = True,
                api_key: str | None = None) -> ThreadingHTTPServer:
    """With `api_key`, every request on every path must carry `Authorization: Bearer API_KEY` (else 401)."""
    from rlvf.api import token_matches

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _authorized(self) -> bool:
            if api_key is None or token_matches(self.headers.get("Authorization"), api_key):
                return True
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)  # read what was sent, so that the connection stays usable
            self._send(401, {"error": {"message": "unauthorized: send Authorization: Bearer TOKEN",
                                       "type": "invalid_request_error", "code": 401}})
            return False

        def log_message(self, format, *args):
            if not quiet:
                super().log_message(format, *args)

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            kind = "invalid_request_error" if status < 500 else "server_error"
            self._send(status, {"error": {"message": message, "type": kind, "code": status}})

        def do_GET(self):
            if not self._authorized():
                return
            path = self.path.split("?")[0].rstrip("/")
            if path in ("/v1/models", "/models"):
                self._send(200, engine.models())
            elif path in ("/health", "/v1/health"):
                self._send(200, {"status": "ok"})
            else:
                self._error(404, f"no route GET {self.path}")

        def do_POST(self):
            if not self._authorized():
                return
            path = self.path.split("?")[0].rstrip("/")
            routes = {"/v1/chat/completions": engine.chat, "/v1/completions": engine.completions}
            try:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError as exc:
                    raise RequestError(f"the body is not valid JSON: {exc}") from None
                if not isinstance(body, dict):
                    raise RequestError("the body must be a JSON object")
                if path not in routes:
                    raise RequestError(f"no route POST {self.path}", status=404)
                self._send(200, routes[path](body))
            except RequestError as exc:
                self._error(exc.status, str(exc))
            except Exception as exc:  # a bug or an exhausted machine: answer, and keep serving
                self._error(500, f"{type(exc).__name__}: {exc}")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlvf_judge.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="an embedded model name, HF id or local directory")
    parser.add_argument("--served-model-name", help="the name clients send as `model` (default: --model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: a free port")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--max-logprobs", type=int, default=20, help="the largest top_logprobs a request may ask")
    parser.add_argument("--log-requests", action="store_true")
    parser.add_argument("--api-key", help="a token every request must carry (default: $RLVF_JUDGE_API_KEY); "
                        "required to listen beyond loopback")
    args = parser.parse_args(argv)
    from rlvf.api import JUDGE_TOKEN_ENV, ConfigError, require_token_off_loopback

    token = args.api_key or os.environ.get(JUDGE_TOKEN_ENV) or None
    try:
        require_token_off_loopback(args.host, token, "python -m rlvf_judge.server",
                                   f"--api-key TOKEN or {JUDGE_TOKEN_ENV}=TOKEN, and the judge reward's api_key "
                                   "option or the same variable where it runs")
    except ConfigError as exc:
        print(f"rlvf_judge.server: error: {exc}", file=sys.stderr)
        return 2
    engine = Engine(args.model, args.served_model_name, args.dtype, args.max_logprobs)
    server = make_server(engine, args.host, args.port, quiet=not args.log_requests, api_key=token)
    host, port = server.server_address[:2]
    print(f"rlvf_judge.server: serving {engine.name} on http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
