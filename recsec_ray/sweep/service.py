"""The sweep's one shared LLM actor (DESIGN §5): started before the trials when any needs it,
weights loaded once, stopped (with its stats kept for the report) when the sweep ends."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from ..config import JobConfig
from .grid import SweepSpec


def _process_cpu_s(_actor: Any) -> float:
    return time.process_time()


def _actor_placement(_actor: Any) -> dict[str, Any]:
    """Run inside the LLM actor: what Ray gave it."""
    import ray

    ctx = ray.get_runtime_context()
    return {"gpu_ids": [str(g) for g in ray.get_gpu_ids()], "node_id": ctx.get_node_id(),
            "pid": os.getpid(), "resources": ctx.get_assigned_resources()}


def wanted(configs: list[JobConfig], spec: SweepSpec) -> list[JobConfig]:
    """The configs whose trials call the LLM (all of them with ``llm="on"``); empty: none."""
    from ..job import needs_llm

    if spec.llm == "off":
        return []
    users = [c for c in configs if needs_llm(c)]
    return users or (configs[:1] if spec.llm == "on" else [])


def start_llm(configs: list[JobConfig], spec: SweepSpec, sweep_id: str
              ) -> tuple[str | None, dict[str, Any] | None]:
    """Start the sweep's one LLM actor (weights loaded now, once) if any trial needs it.
    Placement: its GPU and CPU request, plus the LLM node's custom resource on clusters
    that have one (``placement.llm_actor_resources``)."""
    import ray

    from ..llm import service_name, start_service
    from ..placement import llm_actor_resources

    users = wanted(configs, spec)
    if not users:
        return None, None
    cfg = users[0].llm
    if any(c.llm != cfg for c in users):
        print("[recsec] trials differ in their llm.* settings; the shared service runs with "
              f"the first one's ({cfg}) and answers each call by its model name",
              file=sys.stderr)
    cluster = ray.cluster_resources()
    gpus = spec.llm_gpus if spec.llm_gpus is not None else \
        (1.0 if cluster.get("GPU", 0) >= 1 else 0.0)
    cpus = spec.llm_cpus if spec.llm_cpus is not None else \
        (1.0 if cluster.get("CPU", 0) >= 8 else 0.0)
    extra = llm_actor_resources(cluster)
    name = service_name(sweep_id)
    started = time.time()
    handle = start_service(cfg, name, num_gpus=gpus, num_cpus=cpus, resources=extra)
    placement = ray.get(handle.__ray_call__.remote(_actor_placement))
    print(f"[recsec] LLM service {name} ready in {time.time() - started:.0f} s "
          f"(assigned {placement['resources']}, GPU ids {placement['gpu_ids']})", flush=True)
    return name, placement


def stop_llm(name: str | None) -> dict[str, Any] | None:
    """Stop the service; returns its final stats (model loads, calls, cache hits)."""
    if name is None:
        return None
    import ray

    from ..llm import stop_service
    from ..llm.service import NAMESPACE

    stats = None
    try:
        actor = ray.get_actor(name, namespace=NAMESPACE)
        stats = ray.get(actor.stats.remote(), timeout=60)
        stats["cpu_s"] = ray.get(actor.__ray_call__.remote(_process_cpu_s), timeout=60)
    except Exception as err:  # noqa: BLE001 -- stats are a report, not a reason to fail
        print(f"[recsec] LLM service stats unavailable: {err}", file=sys.stderr)
    stop_service(name)
    return stats
