"""Nothing unauthenticated on the network (issue #17): the judge server and `rlvf vllm-serve` require a token on
every path when given one, refuse to listen beyond loopback without one, and their clients send it. Real servers on
127.0.0.1 only (the vLLM server's own checks are in test_vllm_server.py)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import run_rlvf
from rlvf.engine.server_auth import BearerTokenMiddleware, is_loopback, token_matches
from rlvf.errors import RewardError

TOKEN = secrets.token_hex(16)


@pytest.fixture(scope="module")
def judge_server(tiny_model_dir):
    process = subprocess.Popen([sys.executable, "-m", "rlvf_judge.server", "--model", str(tiny_model_dir), "--port",
                                "0", "--api-key", TOKEN], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = process.stdout.readline()
        assert "serving" in line, f"the judge server did not start: {line}{process.stderr.read()}"
        yield line.split(" on ")[-1].strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


def status(url: str, method: str = "GET", body: dict | None = None, token: str | None = None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": token} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, method=method,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.timeout(120)
def test_judge_server_requires_the_token_on_every_route(judge_server):
    base = judge_server.removesuffix("/v1")
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    routes = [("GET", "/v1/models", None), ("GET", "/models", None), ("GET", "/health", None),
              ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1}), ("POST", "/v1/chat/completions", chat),
              ("GET", "/no/such/route", None)]
    for method, path, body in routes:
        assert status(base + path, method, body) == 401, path
        assert status(base + path, method, body, token="Bearer wrong") == 401, path
        assert status(base + path, method, body, token=TOKEN) == 401, path  # the scheme is required
        assert status(base + path, method, body, token=f"Bearer {TOKEN}") == (404 if "no/such" in path else 200)


@pytest.mark.timeout(120)
def test_the_judge_reward_sends_the_token_from_its_option_or_the_environment(judge_server, monkeypatch):
    from rlvf_judge.reward import JudgeReward

    with pytest.raises(RewardError, match="wants a token"):
        JudgeReward(url=judge_server, retries=0)
    reward = JudgeReward(url=judge_server, api_key=TOKEN)
    scores = asyncio.run(reward(["Is 2+2=4?"], ["yes"]))  # an async reward; a random tiny model may give None
    assert len(scores) == 1 and reward.pop_metrics()["requests"] == 1
    monkeypatch.setenv("RLVF_JUDGE_API_KEY", TOKEN)
    assert asyncio.run(JudgeReward(url=judge_server)(["Is 2+2=4?"], ["yes"])) == scores


def test_servers_refuse_a_non_loopback_address_without_a_token():
    judge = subprocess.run([sys.executable, "-m", "rlvf_judge.server", "--host", "0.0.0.0", "--model", "nowhere"],
                           capture_output=True, text=True, timeout=60, env={**os.environ, "RLVF_JUDGE_API_KEY": ""})
    assert judge.returncode == 2 and "would listen on 0.0.0.0 with no token" in judge.stderr
    assert "--api-key" in judge.stderr and "RLVF_JUDGE_API_KEY" in judge.stderr
    vllm = run_rlvf("vllm-serve", "--host", "0.0.0.0", check=False, env={"RLVF_VLLM_API_KEY": ""})
    assert vllm.returncode == 2 and "rlvf vllm-serve would listen on 0.0.0.0 with no token" in vllm.stderr
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_loopback(host)
    for host in ("0.0.0.0", "::", "10.0.0.5", "my-host"):
        assert not is_loopback(host)


def test_the_vllm_middleware_lets_only_the_token_through(monkeypatch):
    """rlvf's ASGI middleware as vLLM installs it (`--middleware`), on a real ASGI app and real ASGI messages."""
    monkeypatch.setenv("RLVF_VLLM_API_KEY", TOKEN)
    reached = []

    async def app(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guarded = BearerTokenMiddleware(app)

    def call(path: str, authorization: str | None) -> int:
        sent = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b""}

        headers = [(b"authorization", authorization.encode())] if authorization else []
        asyncio.run(guarded({"type": "http", "path": path, "method": "POST", "headers": headers}, receive, send))
        return sent[0]["status"]

    for path in ("/v1/completions", "/collective_rpc", "/reset_prefix_cache", "/health", "/anything"):
        assert call(path, None) == 401 and call(path, "Bearer nope") == 401 and call(path, TOKEN) == 401
        assert call(path, f"Bearer {TOKEN}") == 200
    assert reached == ["/v1/completions", "/collective_rpc", "/reset_prefix_cache", "/health", "/anything"]
    assert token_matches(f"bearer {TOKEN}", TOKEN) and not token_matches(f"Bearer {TOKEN}x", TOKEN)
    monkeypatch.setenv("RLVF_VLLM_API_KEY", "")
    with pytest.raises(RuntimeError, match="no token"):
        BearerTokenMiddleware(app)


RAY_PROBE = r'''
import json, os, subprocess, sys
from rlvf.engine.executors import connect_ray
ray = connect_ray()
address = ray.get_runtime_context().gcs_address
@ray.remote
def answer():
    return 42
connect = "import ray; ray.init(address=%r, logging_level='ERROR'); print('connected')" % address
intruder = subprocess.run([sys.executable, "-c", connect], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")})
friend = subprocess.run([sys.executable, "-c", connect], capture_output=True, text=True, timeout=120)
print(json.dumps({"answer": ray.get(answer.remote()), "mode": os.environ.get("RAY_AUTH_MODE"),
                  "intruder_rc": intruder.returncode, "friend": friend.stdout.strip(),
                  "intruder_refused": "Authentication token is missing or incorrect" in intruder.stderr}))
ray.shutdown()
'''


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_ray_the_local_instance_needs_a_token_and_a_network_cluster_must_use_one():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    probe = subprocess.run([sys.executable, "-c", RAY_PROBE], capture_output=True, text=True, timeout=200, env=env)
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert report["answer"] == 42 and report["mode"] == "token"
    assert report["intruder_rc"] != 0 and report["intruder_refused"], report  # no token, no connection
    assert report["friend"] == "connected"  # the same token (inherited) connects
    refused = subprocess.run([sys.executable, "-c", "from rlvf.engine.executors import connect_ray; "
                              "connect_ray('10.20.30.40:6379')"], capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode != 0 and "must use token authentication" in refused.stderr
