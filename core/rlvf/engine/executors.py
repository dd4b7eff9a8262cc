"""Where rewards run: in the calling process (`reward.executor = "local"`), or in Ray actors (`"ray"`).

With Ray, each reward of the mix lives in `reward.ray.actors` actors (spread over the cluster's nodes), each
holding its own instance built there from the registered reward and its options: a `code` reward keeps its
sandbox pool and cache in its actor for the whole run. A `RayReward` stands in for the reward in the mix. A call
splits the batch between the actors, awaits their results (the rewards of a mix run concurrently) and re-raises
an exception raised by the reward as the reward's own exception, so the mix's failure policies (`raise` naming
the reward and sample, `zero` with a per-sample retry) see exactly what they see with the local executor.

Ray is imported only when a `RayReward` is built: `pip install 'rlvf[ray]'`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rlvf.errors import ConfigError, RewardError


def _import_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from a training run
    try:
        import ray
    except ImportError:
        raise ConfigError("reward.executor = 'ray' needs Ray: pip install 'rlvf[ray]'") from None
    return ray


def connect_ray(address: str | None = None):
    """Connect this process to Ray once: to `address` (or RAY_ADDRESS), else to a local instance it starts.

    Ray's ports run whatever code reaches them (its docs: never expose them), so a cluster on the network
    must use Ray's token authentication (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN, set on every node and here),
    and the local instance rlvf starts uses a fresh token of its own (Ray listens on every interface)."""
    from rlvf.engine.server_auth import is_loopback

    address = address or os.environ.get("RAY_ADDRESS")
    if not address and "ray" not in sys.modules:  # Ray reads its auth mode when imported
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        if os.environ["RAY_AUTH_MODE"] == "token":
            os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
    ray = _import_ray()
    if not ray.is_initialized():
        options: dict[str, Any] = {"logging_level": "WARNING", "configure_logging": True}
        if address:
            host = address.removeprefix("ray://").rsplit(":", 1)[0]
            if os.environ.get("RAY_AUTH_MODE") != "token" and not is_loopback(host) and address != "auto":
                raise ConfigError(f"reward.ray.address = {address!r}: a Ray cluster on the network must use token "
                                  "authentication; start every node with RAY_AUTH_MODE=token RAY_AUTH_TOKEN=SECRET "
                                  "and run rlvf with the same two variables (README, Security)")
            ray.init(address=address, **options)
        else:  # a single-node instance for this process, without the dashboard
            ray.init(include_dashboard=False, **options)
    return ray


class _RewardActor:
    """Holds one reward instance on a Ray worker; its methods are what a RayReward calls remotely."""

    def __init__(self):
        self.reward = None

    def build(self, factory: Callable[[], Any]) -> dict[str, bool]:
        self.reward = factory()
        return {"pop_metrics": callable(getattr(self.reward, "pop_metrics", None)),
                "close": callable(getattr(self.reward, "close", None))}

    def call(self, kwargs: dict[str, Any]):
        result = self.reward(**kwargs)
        if inspect.isawaitable(result):
            async def wait():
                return await result
            result = asyncio.run(wait())
        return result

    def pop_metrics(self) -> dict[str, float]:
        return dict(self.reward.pop_metrics())

    def close(self) -> None:
        self.reward.close()


def _cause(ray, exc: BaseException) -> BaseException:
    """The reward's own exception inside a Ray task error (Ray wraps it with the remote traceback)."""
    cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
    return cause if isinstance(cause, Exception) else exc


class RayReward:
    """A reward running in Ray actors, called like the reward itself (it is async: RewardMix awaits it).

    `factory()` builds the reward on each actor; it is pickled with cloudpickle, so a registered reward (its
    class from an installed plugin and its options) or any function or object with the reward signature works.
    """

    def __init__(self, factory: Callable[[], Any], *, name: str = "reward", actors: int = 1, num_cpus: float = 1.0,
                 address: str | None = None):
        if actors < 1:
            raise ConfigError(f"reward.ray.actors must be >= 1, got {actors}")
        ray = connect_ray(address)
        self.name = name
        remote = ray.remote(_RewardActor).options(num_cpus=num_cpus, scheduling_strategy="SPREAD", max_restarts=3)
        self._actors = [remote.remote() for _ in range(actors)]
        try:  # built remotely; an error building it (a bad option) comes back as the reward's own error
            capabilities = ray.get([actor.build.remote(factory) for actor in self._actors])
        except ray.exceptions.RayTaskError as exc:
            self.close()
            raise _cause(ray, exc) from None
        self._has_close = capabilities[0]["close"]
        if capabilities[0]["pop_metrics"]:  # RewardMix collects the metrics of rewards that have this method
            self.pop_metrics = self._pop_metrics
        self._next = 0  # round-robin start for batches smaller than the number of actors

    @classmethod
    def from_spec(cls, spec, options: dict[str, Any], config) -> RayReward:
        """The registered reward `spec` built with `options` on actors as `config` (RayConfig) says."""
        spec_options = dict(options)
        if spec.takes_options:  # unknown options are reported here, as spec.build does locally
            known = spec.options()
            accepts_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(spec.factory).parameters.values())
            unknown = sorted(set(spec_options) - set(known))
            if unknown and not accepts_any:
                raise RewardError(f"reward '{spec.name}' has no option {', '.join(map(repr, unknown))}; "
                                  f"its options are: {', '.join(sorted(known)) or 'none'}")
        elif spec_options:
            raise RewardError(f"reward '{spec.name}' takes no options, got {sorted(spec_options)}")
        return cls(functools.partial(spec.build, **spec_options), name=spec.name, actors=config.actors,
                   num_cpus=config.num_cpus, address=config.address)

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Sequence[Any]):
        ray = _import_ray()
        n = len(completions)
        chunks = max(1, min(len(self._actors), n))
        bounds = [n * i // chunks for i in range(chunks + 1)]
        refs = []
        for i in range(chunks):
            part = slice(bounds[i], bounds[i + 1])
            actor = self._actors[(self._next + i) % len(self._actors)]
            refs.append(actor.call.remote({"prompts": list(prompts[part]), "completions": list(completions[part]),
                                           **{k: list(v[part]) for k, v in columns.items()}}))
        self._next = (self._next + chunks) % len(self._actors)
        try:
            parts = await asyncio.gather(*refs)
        except ray.exceptions.RayTaskError as exc:
            raise _cause(ray, exc) from None
        if len(parts) == 1 or not all(isinstance(p, (list, tuple)) for p in parts):
            # one actor's answer as it is; a malformed one is reported by the mix as the reward's own output
            return parts[0] if len(parts) == 1 else next(p for p in parts if not isinstance(p, (list, tuple)))
        return [value for part in parts for value in part]

    def _pop_metrics(self) -> dict[str, float]:
        """The reward's metrics, summed over its actors (they are counters: runs, cache hits, seconds...)."""
        ray = _import_ray()
        total: dict[str, float] = {}
        for metrics in ray.get([actor.pop_metrics.remote() for actor in self._actors]):
            for key, value in metrics.items():
                total[key] = total.get(key, 0.0) + float(value)
        return total

    def close(self) -> None:
        """Close the reward in each actor (a sandbox pool stops) and end the actors."""
        ray = _import_ray()
        if getattr(self, "_has_close", False):
            with contextlib.suppress(Exception):  # the actors are killed just below in any case
                ray.get([actor.close.remote() for actor in self._actors], timeout=30)
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []

    def __repr__(self) -> str:
        return f"RayReward({self.name!r}, actors={len(self._actors)})"
