"""rlvf.engine.http: the one retry loop of rlvf's HTTP clients, against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlvf.engine.http import Retries, RetriesExhausted, acall_with_retries, call_with_retries, retryable_status


class FlakyServer:
    """Answers each request with the next status of `statuses`, then 200 with `answer` (default {"ok": n})."""

    def __init__(self, statuses: list[int], answer: dict | None = None):
        self.statuses, self.requests, self.answer = list(statuses), 0, answer
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                status = server.statuses.pop(0) if server.statuses else 200
                answer = server.answer or {"ok": server.requests}
                body = json.dumps(answer if status == 200 else {"error": status}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def flaky(request):
    servers = []

    def start(statuses, answer=None):
        servers.append(FlakyServer(statuses, answer))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def get(url: str):
    """A client as rlvf's are written: (body, None), (None, why) if worth retrying, an exception otherwise."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read()), None
    except urllib.error.HTTPError as exc:
        if retryable_status(exc.code):
            return None, f"HTTP {exc.code}"
        raise


def test_retryable_failures_are_retried_until_an_answer(flaky):
    server = flaky([503, 429, 408])
    retried = []
    body = call_with_retries(lambda: get(server.url), Retries(retries=3, backoff=0.01),
                             on_retry=lambda: retried.append(1))
    assert body == {"ok": 4} and server.requests == 4 and len(retried) == 3


def test_a_client_error_is_not_retried(flaky):
    server = flaky([404])
    with pytest.raises(urllib.error.HTTPError):
        call_with_retries(lambda: get(server.url), Retries(retries=3, backoff=0.01))
    assert server.requests == 1


def test_the_last_reason_is_kept_when_retries_run_out(flaky):
    server = flaky([500, 502, 503])
    with pytest.raises(RetriesExhausted, match=r"HTTP 503 \(after 3 attempt\(s\)\)"):
        call_with_retries(lambda: get(server.url), Retries(retries=2, backoff=0.01))
    assert server.requests == 3


def test_the_async_loop_retries_the_same_way(flaky):
    server = flaky([503, 503])

    async def send():
        return await asyncio.to_thread(get, server.url)
    assert asyncio.run(acall_with_retries(send, Retries(retries=2, backoff=0.01))) == {"ok": 3}


def test_the_wait_doubles_up_to_its_cap():
    assert [Retries(backoff=2.0, max_wait=10.0).wait(k) for k in range(4)] == [2.0, 4.0, 8.0, 10.0]
    with pytest.raises(ValueError, match="retries, backoff and max_wait must be >= 0"):
        Retries(retries=-1)


def test_the_vllm_server_sampler_retries_a_busy_server_and_names_one_that_refuses(flaky):
    from rlvf.errors import ConfigError
    from rlvf.sampling.vllm_server import VLLMServerSampler

    busy = flaky([503], answer={"data": [{"id": "served-model"}]})
    sampler = VLLMServerSampler(busy.url, tokenizer=None, eos_ids={0}, retries=1)
    assert sampler.served_model == "served-model" and busy.requests == 2
    refusing = flaky([404])
    with pytest.raises(ConfigError, match=r"sampling.vllm_server: GET .*/v1/models failed: HTTP 404"):
        VLLMServerSampler(refusing.url, tokenizer=None, eos_ids={0}, retries=3)
    assert refusing.requests == 1
