"""Where the shared LLM actor and the trials land on a Ray cluster (DESIGN §5, §7; infra/).

The cluster configs in ``infra/`` give the LLM node type a custom resource ``llm_host``. The
LLM actor asks for a sliver of it (plus its GPU), so the autoscaler can only satisfy it by
launching that node type; trials ask only for ``{"cpu": c, "gpu": g}`` and spread over the trial
GPU nodes. Create the LLM actor and wait until it is ready *before* submitting trials: otherwise
a trial could take the LLM node's only GPU first.

A cluster that starts with zero workers does not list ``llm_host`` in ``ray.cluster_resources()``
until the autoscaler has launched an LLM node, and Ray offers the driver no public view of the
autoscaler's node types. So ``infra/`` also names the custom resources its node types can add in
the environment variable ``RECSEC_AUTOSCALE_RESOURCES`` on the head node, where the sweep's driver
runs. On a laptop neither source mentions ``llm_host`` and the actor is placed by CPU/GPU only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from recsec_ray.errors import ConfigError

LLM_RESOURCE = "llm_host"
# A sliver, so several LLM actors (e.g. an embedder and a generator) can share one LLM node.
LLM_RESOURCE_REQUEST = 0.001
AUTOSCALE_ENV = "RECSEC_AUTOSCALE_RESOURCES"

_RESOURCE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def autoscale_resources(environ: Mapping[str, str] | None = None) -> dict[str, float]:
    """Custom resources the autoscaler can add, from ``RECSEC_AUTOSCALE_RESOURCES`` ("a,b")."""
    raw = (os.environ if environ is None else environ).get(AUTOSCALE_ENV, "")
    names = [name.strip() for name in raw.split(",") if name.strip()]
    for name in names:
        if not _RESOURCE_NAME.match(name):
            raise ConfigError(f"{AUTOSCALE_ENV}: {name!r} is not a Ray resource name")
    return {name: 1.0 for name in names}


def schedulable_resources(
    cluster_resources: Mapping[str, float], environ: Mapping[str, str] | None = None
) -> dict[str, float]:
    """Resources the cluster has now (``ray.cluster_resources()``) plus those it can scale to."""
    merged = {str(k): float(v) for k, v in cluster_resources.items()}
    for name, amount in autoscale_resources(environ).items():
        merged[name] = max(merged.get(name, 0.0), amount)
    return merged


def llm_actor_resources(
    cluster_resources: Mapping[str, float], environ: Mapping[str, str] | None = None
) -> dict[str, float]:
    """Custom-resource request for the LLM actor: ``{"llm_host": 0.001}`` where the cluster has,
    or can autoscale to, an LLM node type; ``{}`` elsewhere (local runs), since asking for a
    resource nobody offers would leave the actor pending forever.

    Pass ``ray.cluster_resources()``; pass the result as ``resources=`` next to ``num_gpus``.
    """
    if schedulable_resources(cluster_resources, environ).get(LLM_RESOURCE, 0.0) > 0:
        return {LLM_RESOURCE: LLM_RESOURCE_REQUEST}
    return {}
