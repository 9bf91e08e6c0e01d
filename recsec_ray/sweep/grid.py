"""What a sweep runs: its spec, the grid's trial configs, and the names a person reads them by.

Nothing here imports Ray: a bad grid is refused before anything heavy is loaded.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from ..config import JobConfig, pin_path
from ..errors import ConfigError
from ..tracking import HEADLINE_METRICS

# Command-line axis -> dotted config key and type. ``--poison-rate 0.01,0.05`` sweeps it.
AXES: dict[str, tuple[str, type]] = {
    "dataset": ("data.name", str),
    "backbone": ("model.backbone", str),
    "items": ("model.items", str),
    "attack": ("attack.name", str),
    "poison_rate": ("attack.poison_rate", float),
    "badrec_fraction": ("attack.badrec_fraction", float),
    "trigger_level": ("attack.trigger_level", str),
    "defense": ("defense.name", str),
    "seed": ("seed", int),
    "epochs": ("model.epochs", int),
}
# Columns of the per-trial lines and the final tables, in order.
SUMMARY_METRICS = HEADLINE_METRICS
FIXED = "fixed"  # param_space key holding the non-swept config values


@dataclass
class SweepSpec:
    """What to run and where. ``grid`` maps dotted config keys to the values swept (the
    cartesian product is the set of trials); ``fixed`` holds the other overrides."""

    name: str
    grid: dict[str, list[Any]]
    fixed: dict[str, Any] = field(default_factory=dict)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2  # retries of a crashed trial; errors that cannot heal get none
    max_concurrent: int | None = None
    storage_path: str = "sweep_results"
    mlflow_uri: str | None = None  # None: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    ray_address: str | None = None  # None: start a local Ray for this sweep
    num_cpus: int | None = None  # local Ray only
    num_gpus: int | None = None
    dashboard: bool = False
    resume: str | None = None  # a sweep id, or "latest"
    llm: str = "auto"  # auto: start the shared LLM service when a trial needs it; on; off
    llm_gpus: float | None = None  # None: 1 where the cluster has a GPU, else 0
    llm_cpus: float | None = None  # None: 1 on clusters of 8+ CPUs, else 0 (a laptop's cores
    #                               go to trials; the actor still computes on one thread)
    progress: bool = False  # tqdm bars inside jobs (off: the sweep's one-line progress)
    verbose: int = 1  # 0 silent, 1 one line per trial event + a heartbeat, 2 + Tune's tables
    metric: str = "t_hr@50"  # first column of the closing tables; plotted with HR@10
    preflight: bool = True  # check data, models and MLflow before Ray starts (off: a cluster
    #                         whose driver cannot see the workers' data folder)


def expand(spec: SweepSpec) -> list[JobConfig]:
    """Every trial's config, validated now so a bad value fails before any trial starts."""
    keys = list(spec.grid)
    for k in keys:
        if len({repr(pin_path(k, v)) for v in spec.grid[k]}) != len(spec.grid[k]):
            raise ConfigError(f"{k}: the sweep lists a value twice ({spec.grid[k]}); two trials "
                              "would share one MLflow run")
    configs = []
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        try:
            configs.append(JobConfig.from_dict({**spec.fixed, **point}))
        except ConfigError as err:
            where = ", ".join(f"{k}={v}" for k, v in point.items())
            raise ConfigError(f"{err} (in the grid point {where})") from None
    if not configs:
        raise ConfigError("the sweep grid is empty (an axis has no values)")
    return configs


_SHORT = {key: axis for axis, (key, _) in AXES.items()}


def trial_label(flat: dict[str, Any], keys: list[str]) -> str:
    """``poison_rate=0.05 defense=lorec seed=0``: the swept values, by their flag names."""
    return " ".join(f"{_SHORT.get(k, k)}={flat[k]}" for k in keys)


def swept(config: dict[str, Any]) -> list[str]:
    """The swept keys of a Tune trial config (everything but the fixed block)."""
    return [k for k in config if k != FIXED]


def label_of(config: dict[str, Any]) -> str:
    return trial_label(config, swept(config))


def job_config(config: dict[str, Any]) -> JobConfig:
    """A Tune trial config (swept values + the fixed block) as the job's config."""
    flat = dict(config[FIXED])
    flat.update({k: v for k, v in config.items() if k != FIXED})
    return JobConfig.from_dict(flat)


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's grid: one ``grid_search`` per swept key, the fixed values in one block."""
    from ray import tune

    space: dict[str, Any] = {k: tune.grid_search([pin_path(k, x) for x in v])
                             for k, v in spec.grid.items()}
    space[FIXED] = {k: pin_path(k, v) for k, v in spec.fixed.items()}
    return space
