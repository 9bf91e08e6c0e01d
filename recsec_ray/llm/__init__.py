"""The shared LLM service (DESIGN §5): one entry point for every LLM call of the project.

``get_client(cfg)`` returns the sweep's actor client when one is running (by name, or the name
in ``$RECSEC_LLM_SERVICE``), else an in-process client on the same backend and the same disk
cache. In-process services are kept per config, so a process loads each model once.
"""

from __future__ import annotations

import os
import sys
import threading

from ..config import LLMConfig
from .backend import LLMRequestError, LLMServiceError
from .client import LLMClient, LocalClient

__all__ = [
    "LLMClient",
    "LLMRequestError",
    "LLMServiceError",
    "get_client",
    "local_service",
    "service_name",
    "start_service",
    "stop_service",
]

_LOCAL: dict[LLMConfig, object] = {}
_LOCK = threading.Lock()


def local_service(cfg: LLMConfig):
    """This process's ``LLMService`` for ``cfg`` (created on first use)."""
    from .core import LLMService

    with _LOCK:
        if cfg not in _LOCAL:
            _LOCAL[cfg] = LLMService(cfg)
        return _LOCAL[cfg]


def get_client(cfg: LLMConfig, service_name: str | None = None) -> LLMClient:
    name = service_name or os.environ.get("RECSEC_LLM_SERVICE")
    ray = sys.modules.get("ray")  # a process that never imported Ray has no cluster
    if name and ray is not None and ray.is_initialized():
        from .service import ActorClient

        try:
            return ActorClient(name)
        except ValueError:  # no such actor: serve in-process
            pass
    return LocalClient(local_service(cfg))


def start_service(*args, **kwargs):
    from .service import start_service as _start

    return _start(*args, **kwargs)


def stop_service(name: str) -> bool:
    from .service import stop_service as _stop

    return _stop(name)


def service_name(sweep: str) -> str:
    from .service import service_name as _name

    return _name(sweep)
