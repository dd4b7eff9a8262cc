"""A bearer token on every server rlvf starts or talks to (the vLLM server, the judge server).

The rule is the same everywhere: every request, on every path, carries `Authorization: Bearer TOKEN`; a
server bound to anything but loopback refuses to start without a token. vLLM's own `--api-key` guards only
the `/v1`-style paths, not the `/collective_rpc` and `/reset_prefix_cache` dev endpoints that weight sync
needs (and that take any worker method), so `rlvf vllm-serve` installs `BearerTokenMiddleware` instead.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os

from rlvf.errors import ConfigError

VLLM_TOKEN_ENV = "RLVF_VLLM_API_KEY"  # read by `rlvf vllm-serve`, its middleware and the server sampler
JUDGE_TOKEN_ENV = "RLVF_JUDGE_API_KEY"  # read by `python -m rlvf_judge.server` and the judge reward


def bearer_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def token_matches(authorization: str | None, token: str) -> bool:
    """Does an Authorization header carry `token`? (Constant time in the token.)"""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(hashlib.sha256(given.strip().encode()).digest(), hashlib.sha256(token.encode()).digest())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def require_token_off_loopback(host: str, token: str | None, server: str, how: str) -> None:
    """Refuse to serve `host` unauthenticated unless it is loopback (local use keeps working without one)."""
    if not token and not is_loopback(host):
        raise ConfigError(f"{server} would listen on {host} with no token, open to anyone who reaches the port; "
                          f"set one: {how} (loopback, 127.0.0.1, needs none)")


class BearerTokenMiddleware:
    """Pure ASGI middleware: every HTTP and websocket request must carry the token in $RLVF_VLLM_API_KEY
    (set by `rlvf vllm-serve`, which loads this with vLLM's `--middleware`), or it gets 401."""

    def __init__(self, app) -> None:
        self.app = app
        self.token = os.environ.get(VLLM_TOKEN_ENV, "")
        if not self.token:
            raise RuntimeError(f"{VLLM_TOKEN_ENV} is empty: the token middleware has no token to check")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan events
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}
        if token_matches(headers.get("authorization"), self.token):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": "unauthorized: send Authorization: Bearer TOKEN"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})
