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
POINT = "point"  # param_space key: its one grid axis lists whole grid points, longest first

# Relative cost of a trial, used only to start the longest first (the order changes no
# result: each trial is a pure function of its config). Measured on ML-100K, 2 cores: a LoRec
# trial (or its control) ~2x an undefended one; the rest are rough guesses.
DEFENSE_COST = {"lorec": 2.0, "lorec_control": 2.0, "llm4dec": 1.5, "apr": 2.0,
                "pscanner": 6.0, "onion": 3.0}
BACKBONE_COST = {"pop": 0.1, "bert4rec": 1.5, "llmrec": 6.0}
ATTACK_COST = {"dp": 2.0, "llm": 2.0}


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


def expected_cost(cfg: JobConfig) -> float:
    """Roughly how long ``cfg``'s trial takes, relative to an undefended SASRec one."""
    return (BACKBONE_COST.get(cfg.model.backbone, 1.0) * ATTACK_COST.get(cfg.attack.name, 1.0)
            * DEFENSE_COST.get(cfg.defense.name, 1.0) * (1.0 + cfg.attack.poison_rate)
            * cfg.model.epochs / 200)


def points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The grid's points (swept key -> value), longest expected trial first.

    Tune starts trials in this order. Started in grid order, a sweep of short and long trials
    (undefended and LoRec ones) ends with long trials running alone on one core while the
    others idle; longest first, the short ones fill the gaps at the end (LPT scheduling).
    Ties keep grid order."""
    keys = list(spec.grid)
    grid = [dict(zip(keys, values, strict=True))
            for values in itertools.product(*(spec.grid[k] for k in keys))]
    cost = [expected_cost(cfg) for cfg in expand(spec)]
    return [grid[i] for i in sorted(range(len(grid)), key=lambda i: -cost[i])]


_SHORT = {key: axis for axis, (key, _) in AXES.items()}


def trial_label(flat: dict[str, Any], keys: list[str]) -> str:
    """``poison_rate=0.05 defense=lorec seed=0``: the swept values, by their flag names."""
    return " ".join(f"{_SHORT.get(k, k)}={flat[k]}" for k in keys)


def point_of(config: dict[str, Any]) -> dict[str, Any]:
    """The swept values of a Tune trial config (a sweep started before ``POINT`` existed has
    one top-level key per swept value)."""
    if POINT in config:
        return dict(config[POINT])
    return {k: v for k, v in config.items() if k != FIXED}


def swept(config: dict[str, Any]) -> list[str]:
    """The swept keys of a Tune trial config (everything but the fixed block)."""
    return list(point_of(config))


def label_of(config: dict[str, Any]) -> str:
    return trial_label(point_of(config), swept(config))


def job_config(config: dict[str, Any]) -> JobConfig:
    """A Tune trial config (swept values + the fixed block) as the job's config."""
    flat = dict(config[FIXED])
    flat.update(point_of(config))
    return JobConfig.from_dict(flat)


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's grid: one ``grid_search`` over the points (``points``: longest first; Tune
    starts a single axis's values in list order), the fixed values in one block."""
    from ray import tune

    return {POINT: tune.grid_search([{k: pin_path(k, v) for k, v in p.items()}
                                     for p in points(spec)]),
            FIXED: {k: pin_path(k, v) for k, v in spec.fixed.items()}}
