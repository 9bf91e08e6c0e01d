"""The shared LLM service of a sweep: one named Ray actor holding the models once.

The driver calls ``start_service`` before trials start; trials reach it by name through
``llm.get_client``. The actor is asynchronous (many trials' calls in flight at once, batched by
the backend) and restartable: if its process dies, Ray restarts it (``max_restarts``), Ray
retries the in-flight calls on the new process (``max_task_retries``), and the client retries
up to ``retries`` times more itself (the restarted actor reloads its adapters), so a caller
gets the right answer. Calls have no deadline: on a CPU one legitimately takes minutes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from typing import Any

import numpy as np

from ..config import LLMConfig
from .backend import LLMServiceError
from .client import _Counting

NAMESPACE = "recsec"
_HANDLES: dict[str, Any] = {}  # a non-detached actor lives while its creator holds a handle


def service_name(sweep: str) -> str:
    """The conventional actor name for a sweep: ``recsec-llm-<sweep>``."""
    return f"recsec-llm-{sweep}"


class LLMActor:
    """Ray actor body (wrapped with ``ray.remote`` in ``start_service``).

    Adapters are recorded in a small JSON file beside the result cache; a restarted actor
    (same constructor arguments) reloads them, so retried adapter calls still find them."""

    def __init__(self, cfg: dict[str, Any], num_cpus: float, name: str, preload: bool) -> None:
        import ray
        import torch

        torch.set_num_threads(max(1, int(num_cpus)))
        from .core import LLMService

        self.svc = LLMService(LLMConfig(**cfg))
        self.started = time.time()
        self.registry = self.svc.cache_folder / "services" / f"{name}.adapters.json"
        self.restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        self.adapters: dict[str, list] = {}
        if self.restarted and self.registry.is_file():
            for ad_name, (path, model) in json.loads(self.registry.read_text()).items():
                self.svc.load_adapter(ad_name, path, model=model)
                self.adapters[ad_name] = [path, model]
        else:
            self._save_registry()
        if preload:  # also on a restart: the new process serves like the old one
            self.svc.preload()

    def _save_registry(self) -> None:
        self.registry.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.registry.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.adapters))
        tmp.replace(self.registry)

    def ready(self) -> int:
        return os.getpid()

    async def call(self, call: str, texts: list[str], model: str | None, adapter: str | None,
                   params: dict[str, Any]) -> tuple[Any, int]:
        loop = asyncio.get_running_loop()
        pending = await loop.run_in_executor(
            None, lambda: self.svc.begin(call, texts, model=model, adapter=adapter, **params))
        return await pending.aresult(), pending.hits

    async def load_adapter(self, name: str, path: str, model: str | None) -> None:
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.svc.load_adapter(name, path, model=model))
        self.adapters[name] = [path, model]
        self._save_registry()

    async def offline(self, call: str, texts: list[str], model: str | None,
                      params: dict[str, Any]) -> float:
        """Seconds the backend's own batch call takes over ``texts`` (benchmark yardstick)."""
        def run() -> float:
            t0 = time.perf_counter()
            self.svc.offline(call, texts, model=model, **params)
            return time.perf_counter() - t0

        return await asyncio.get_running_loop().run_in_executor(None, run)

    def stats(self) -> dict[str, Any]:
        return {**self.svc.stats(), "pid": os.getpid(), "restarted": self.restarted,
                "actor_uptime_s": time.time() - self.started}

    def pid(self) -> int:
        return os.getpid()


def start_service(cfg: LLMConfig, name: str, num_gpus: float = 0, num_cpus: float = 1, *,
                  preload: bool = True, detached: bool = False, max_restarts: int = 5,
                  resources: dict[str, float] | None = None):
    """Create (or find) the named actor and wait until its default models are loaded.

    ``detached`` keeps it alive after the driver exits (stop it with ``stop_service``);
    otherwise it ends with the driver that created it. ``resources``: custom resources (e.g.
    ``placement.llm_actor_resources``) that pin the actor to the cluster's LLM node type."""
    import ray

    if not ray.is_initialized():
        raise LLMServiceError("start_service: Ray is not initialised (call ray.init first)")
    actor_cls = ray.remote(LLMActor)
    handle = actor_cls.options(
        name=name, namespace=NAMESPACE, get_if_exists=True,
        lifetime="detached" if detached else None, max_restarts=max_restarts,
        max_task_retries=-1, max_concurrency=64, num_cpus=num_cpus, num_gpus=num_gpus,
        resources=resources or None,
    ).remote(dataclasses.asdict(cfg), num_cpus, name, preload)
    ray.get(handle.ready.remote())
    _HANDLES[name] = handle
    return handle


def stop_service(name: str) -> bool:
    """Kill the named actor (no restart); False if there was none."""
    import ray

    try:
        handle = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    ray.kill(handle, no_restart=True)
    _HANDLES.pop(name, None)
    return True


class ActorClient(_Counting):
    """Client of the named actor; retries calls across actor restarts."""

    def __init__(self, name: str, retries: int = 6, backoff_s: float = 1.0) -> None:
        import ray

        super().__init__()
        self.name = name
        self.retries = retries
        self.backoff_s = backoff_s
        self.handle = ray.get_actor(name, namespace=NAMESPACE)
        self.retried = 0

    def _invoke(self, method: str, *args: Any) -> Any:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            try:
                return ray.get(getattr(self.handle, method).remote(*args))
            except RayTaskError as err:  # the call itself failed: show the user's error
                cause = err.cause if getattr(err, "cause", None) is not None else err
                raise cause from None
            except RayActorError as err:
                last = err
                self.retried += 1
                time.sleep(self.backoff_s * (attempt + 1))
                self._reconnect()
        raise LLMServiceError(f"LLM service {self.name!r} did not answer after "
                              f"{self.retries} retries: {last}")

    def _reconnect(self) -> None:
        """Find the (restarted) actor again; it reloads its adapters itself."""
        import ray

        try:
            self.handle = ray.get_actor(self.name, namespace=NAMESPACE)
        except ValueError:
            pass

    def _call(self, call: str, texts: list[str], model, adapter, **params) -> Any:
        result, hits = self._invoke("call", call, texts, model, adapter, params)
        self._count(len(texts), hits)
        return result

    def embed(self, texts: list[str], *, model: str | None = None,
              adapter: str | None = None) -> np.ndarray:
        return self._call("embed", texts, model, adapter)

    def generate(self, prompts: list[str], *, max_tokens: int = 64, temperature: float = 0.0,
                 seed: int = 0, model: str | None = None,
                 adapter: str | None = None) -> list[str]:
        return self._call("generate", prompts, model, adapter, max_tokens=max_tokens,
                          temperature=temperature, seed=seed)

    def score(self, prompts: list[str], choices: list[str], *, model: str | None = None,
              adapter: str | None = None) -> np.ndarray:
        return self._call("score", prompts, model, adapter, choices=list(choices))

    def hidden(self, texts: list[str], *, layer: int,
               model: str | None = None) -> list[np.ndarray]:
        return self._call("hidden", texts, model, None, layer=layer)

    def load_adapter(self, name: str, path: str, *, model: str | None = None) -> None:
        self._invoke("load_adapter", name, path, model)

    def stats(self) -> dict[str, Any]:
        out = self._client_stats(self._invoke("stats"))
        out["retries"] = self.retried
        return out

    def pid(self) -> int:
        return self._invoke("pid")
