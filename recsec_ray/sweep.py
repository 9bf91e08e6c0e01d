"""Ray Tune glue: a grid of jobs run as trials, tracked in MLflow (DESIGN §7).

The driver validates every config of the grid before anything starts, starts the shared LLM
service (weights loaded once per sweep) and the MLflow writer, runs the grid with Tune
(per-trial CPU/GPU requests, FailureConfig retries, resumable from its storage path), and ends
with a results table and where MLflow stored it. ``recsec_ray.job.run`` stays unaware of all
of this: the trainable below only wraps it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import os
import re
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from .config import JobConfig, parse_override, pin_path
from .errors import ConfigError, RecsecError
from .tracking import (
    TrackingStore,
    TrialTracker,
    files_under,
    is_sqlite,
    resolve_uri,
    start_writer,
    trial_key,
    writer_name,
)

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
# Columns of the per-trial summary line and the final tables, in order.
SUMMARY_METRICS = ("hr@10", "t_hr@50", "user_f1", "item_f1", "asr@10")
_FIXED = "fixed"  # param_space key holding the non-swept config values


@dataclass
class SweepSpec:
    """What to run and where. ``grid`` maps dotted config keys to the values swept (the
    cartesian product is the set of trials); ``fixed`` holds the other overrides."""

    name: str
    grid: dict[str, list[Any]]
    fixed: dict[str, Any] = field(default_factory=dict)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2
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
    progress: bool = False  # tqdm bars inside jobs (off: Tune's table and per-trial lines)
    verbose: int = 1


@dataclass(frozen=True)
class TrialContext:
    """Handed to every trial (through ``tune.with_parameters``), never part of the config."""

    uri: str
    experiment_id: str
    parent_run_id: str
    writer: str | None  # name of the single-writer actor (SQLite) or None (direct client)
    cpus: float
    progress: bool
    llm_service: str | None = None  # name of the shared LLM actor, if the sweep started one


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]  # one per finished trial: swept values + final metrics
    errors: list[str]  # trials that failed after all retries: "label: error headline"
    unfinished: list[str]  # trials stopped before their end (Ctrl+C): resume them
    tracking_uri: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    sweep_id: str
    storage: str
    wall_s: float
    llm_stats: dict[str, Any] | None = None  # the shared LLM service's stats at the end
    llm_placement: dict[str, Any] | None = None  # GPU ids, node, resources Ray gave it
    finished_at: float = 0.0  # time.time() when fit() returned (wall_s ends here)


# ---- grid -------------------------------------------------------------------------------------
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


# ---- the trainable ----------------------------------------------------------------------------
def _job_config(config: dict[str, Any]) -> JobConfig:
    flat = dict(config[_FIXED])
    flat.update({k: v for k, v in config.items() if k != _FIXED})
    return JobConfig.from_dict(flat)


def _run_params(cfg: JobConfig) -> dict[str, Any]:
    """Flattened config plus which model plays which LLM role (DESIGN §5: record it)."""
    from .job import needs_llm

    params = cfg.flat()
    if needs_llm(cfg):
        params["llm.roles"] = (f"judge={cfg.llm.model};embed={cfg.llm.embed_model};"
                               f"text_encoder={cfg.model.text_encoder}")
    return params


def trainable(config: dict[str, Any], ctx: TrialContext) -> None:
    """One trial: run the job once, log it to its MLflow child run, report to Tune."""
    import ray
    import torch
    from ray import tune

    from .job import needs_llm

    started, cpu_started = time.time(), time.process_time()
    torch.set_num_threads(max(1, int(ctx.cpus)))
    cfg = _job_config(config)
    flat = cfg.flat()
    key = trial_key(flat)
    tracker = TrialTracker(ctx.uri, ctx.writer)
    tune_ctx = tune.get_context()
    swept = [k for k in config if k != _FIXED]
    start = tracker.call(
        "start_trial", ctx.experiment_id, ctx.parent_run_id, key,
        run_name=trial_label(flat, swept).replace(" ", ","), params=_run_params(cfg),
        tags={"recsec.pid": str(os.getpid()), "recsec.tune_trial": tune_ctx.get_trial_name(),
              "recsec.resources": json.dumps(tune_ctx.get_trial_resources().required_resources),
              "recsec.gpu_ids": json.dumps([str(g) for g in ray.get_gpu_ids()])})
    base = {"trial_key": key, "mlflow_run_id": start.run_id, "attempt": start.attempt}
    if start.finished_metrics is not None:  # a resumed sweep re-ran a trial MLflow has done
        tune.report({**start.finished_metrics, **base, "reused_run": 1})
        return

    llm = None
    if needs_llm(cfg):
        from .llm import get_client

        llm = get_client(cfg.llm, service_name=ctx.llm_service)

    def on_epoch(row: dict[str, Any]) -> None:
        step = int(row.get("epoch", 0))
        values = {k: float(v) for k, v in row.items()
                  if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        tracker.submit("log_metrics", start.run_id, {f"epoch/{k}": v for k, v in values.items()},
                       step=step)
        tune.report({"epoch": step, **values})

    from .job import run as job_fn

    with tempfile.TemporaryDirectory(prefix="recsec-trial-") as art:
        try:
            metrics = job_fn(cfg, llm=llm, progress=ctx.progress, artifacts_dir=art,
                             on_epoch=on_epoch)
            tracker.flush()
        except BaseException as err:
            tracker.flush()
            tracker.call("fail_attempt", start.run_id, f"{type(err).__name__}: {err}"[:4000])
            raise
        busy = time.time() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # CPU seconds (all threads) say what a trial costs whatever else shares the machine
        cost = {"trial_busy_s": busy, "trial_cpu_s": time.process_time() - cpu_started,
                "trial_peak_rss_mb": peak}
        tags = _llm_tags(llm.stats()) if llm is not None else {}
        tracker.call("finish_trial", start.run_id, {**metrics, **cost}, files_under(art),
                     tags=tags)
    tune.report({**metrics, **cost, **base, "trial_start": started, "trial_end": time.time()})


def _llm_tags(stats: dict[str, Any]) -> dict[str, str]:
    """The trial's own LLM usage, and which service process answered it."""
    tags = {f"recsec.llm.{k}": str(v) for k, v in stats.items()
            if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    service = stats.get("service") or {}
    for key in ("pid", "backend", "device"):
        if key in service:
            tags[f"recsec.llm.service_{key}"] = str(service[key])
    if "model_loads" in service:
        tags["recsec.llm.model_loads"] = json.dumps(service["model_loads"], sort_keys=True)
    return tags


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


# ---- driver-side callback ---------------------------------------------------------------------
# Tune pickles the callbacks with the experiment (and restores them on resume), so the
# callback holds only the sweep id and finds the live driver state here.
_DRIVER_STATE: dict[str, tuple[TrialContext, int]] = {}


def _headline(error: str) -> str:
    """The last line of a (Ray-wrapped) traceback: ``SomeError: what went wrong``."""
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "unknown error")[:500]


def _last_error(trial: Any) -> str:
    """The headline of the trial's latest failure, from Tune's error file."""
    text = trial.get_error() or ""
    block = text.rsplit("Failure # ", 1)[-1].splitlines()[1:]
    heads = [ln for ln in block if ln and not ln.startswith((" ", "Traceback"))]
    return (heads[-1] if heads else "unknown error")[:500]


class SweepCallback(Callback):
    """One clear line per trial; marks a dead attempt's MLflow run FAILED before Tune starts
    its retry (the hook waits for the write, and Tune only reschedules after it returns)."""

    def __init__(self, sweep_id: str) -> None:
        self.sweep_id = sweep_id
        self.done = 0

    @staticmethod
    def _label(trial: Any) -> str:
        return trial_label(trial.config, [k for k in trial.config if k != _FIXED])

    def _fail(self, trial: Any, what: str) -> None:
        ctx, _ = _DRIVER_STATE[self.sweep_id]
        try:
            reason = f"{what}: {_last_error(trial)}"
            key = trial_key(_job_config(trial.config).flat())
            TrialTracker(ctx.uri, ctx.writer).call(
                "fail_trial", ctx.experiment_id, ctx.parent_run_id, key, reason)
        except Exception as err:  # noqa: BLE001 -- tracking trouble must not stop the sweep
            print(f"[recsec] could not mark the failed attempt in MLflow: {err}",
                  file=sys.stderr)

    def on_trial_recover(self, iteration, trials, trial, **info):
        print(f"[recsec] trial {self._label(trial)}: attempt failed, retrying "
              f"({trial.num_failures} failure(s) so far)", flush=True)
        self._fail(trial, "attempt failed; Tune retries it")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        n = _DRIVER_STATE[self.sweep_id][1]
        print(f"[recsec] trial {self.done}/{n} ERROR {self._label(trial)} "
              f"(gave up after {trial.num_failures} failure(s))", flush=True)
        self._fail(trial, "attempt failed; no retries left")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        n = _DRIVER_STATE[self.sweep_id][1]
        r = trial.last_result or {}
        shown = "  ".join(f"{m}={r[m]:.4f}" for m in SUMMARY_METRICS
                          if isinstance(r.get(m), (int, float)))
        extra = " (already in MLflow)" if r.get("reused_run") else ""
        busy = r.get("trial_busy_s")
        took = f"  {busy:.0f}s" if isinstance(busy, (int, float)) else ""
        print(f"[recsec] trial {self.done}/{n} done  {self._label(trial)}  {shown}{took}{extra}",
              flush=True)


# ---- running a sweep --------------------------------------------------------------------------
PATH_ENV = ("RECSEC_DATA_DIR", "RECSEC_CACHE_DIR")


def pin_path_env() -> None:
    """Make relative folders in ``PATH_ENV`` absolute: Ray's workers inherit the driver's
    environment but run trials in their own directories (``export RECSEC_DATA_DIR=../x``)."""
    for var in PATH_ENV:
        if os.environ.get(var):
            os.environ[var] = os.path.abspath(os.path.expanduser(os.environ[var]))


def _init_ray(spec: SweepSpec) -> bool:
    """Connect or start Ray; True when this call started it (and so must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    pin_path_env()
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("RECSEC_", "HF_", "TRANSFORMERS_", "VLLM_"))}
    if spec.ray_address:
        try:
            ray.init(address=spec.ray_address, runtime_env={"env_vars": env} if env else None)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise RecsecError(f"--ray-address {spec.ray_address}: cannot connect ({err})") \
                from None
    else:
        # "local": a fresh instance even when `ray start` left a cluster running here
        ray.init(address="local", num_cpus=spec.num_cpus, num_gpus=spec.num_gpus,
                 include_dashboard=spec.dashboard, dashboard_host="127.0.0.1")
    return True


def _storage(spec: SweepSpec) -> str:
    path = spec.storage_path
    return path if "://" in path else str(Path(path).expanduser().resolve())


def find_resumable(storage: str, name: str) -> str | None:
    """The latest restorable Tune experiment of sweep ``name`` under a local storage path."""
    from ray.tune import Tuner

    root = Path(storage)
    own = re.compile(rf"{re.escape(name)}-\d{{8}}-\d{{6}}-\d{{4}}")  # not "{name}-smoke-..."
    found = [p for p in root.glob(f"{name}-*") if own.fullmatch(p.name) and p.is_dir()
             and Tuner.can_restore(str(p))]
    return max(found, key=lambda p: p.stat().st_mtime).name if found else None


def _process_cpu_s(_actor: Any) -> float:
    return time.process_time()


def _actor_placement(_actor: Any) -> dict[str, Any]:
    """Run inside the LLM actor: what Ray gave it."""
    import ray

    ctx = ray.get_runtime_context()
    return {"gpu_ids": [str(g) for g in ray.get_gpu_ids()], "node_id": ctx.get_node_id(),
            "pid": os.getpid(), "resources": ctx.get_assigned_resources()}


def _start_llm(configs: list[JobConfig], spec: SweepSpec, sweep_id: str
               ) -> tuple[str | None, dict[str, Any] | None]:
    """Start the sweep's one LLM actor (weights loaded now, once) if any trial needs it.
    Placement: its GPU and CPU request, plus the LLM node's custom resource on clusters
    that have one (``placement.llm_actor_resources``)."""
    import ray

    from .job import needs_llm
    from .llm import service_name, start_service
    from .placement import llm_actor_resources

    users = [c for c in configs if needs_llm(c)]
    if spec.llm == "off" or (spec.llm == "auto" and not users):
        return None, None
    cfg = (users or configs)[0].llm
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


def _stop_llm(name: str | None) -> dict[str, Any] | None:
    """Stop the service; returns its final stats (model loads, calls, cache hits)."""
    if name is None:
        return None
    import ray

    from .llm import stop_service
    from .llm.service import NAMESPACE

    stats = None
    try:
        actor = ray.get_actor(name, namespace=NAMESPACE)
        stats = ray.get(actor.stats.remote(), timeout=60)
        stats["cpu_s"] = ray.get(actor.__ray_call__.remote(_process_cpu_s), timeout=60)
    except Exception as err:  # noqa: BLE001 -- stats are a report, not a reason to fail
        print(f"[recsec] LLM service stats unavailable: {err}", file=sys.stderr)
    stop_service(name)
    return stats


def run_sweep(spec: SweepSpec) -> SweepResult:
    """Run (or resume) the sweep; blocks until every trial has finished or given up."""
    from ray import tune

    configs = expand(spec)
    storage = _storage(spec)
    if spec.resume:
        sweep_id = find_resumable(storage, spec.name) if spec.resume == "latest" else spec.resume
        if not sweep_id or not tune.Tuner.can_restore(f"{storage}/{sweep_id}"):
            raise RecsecError(f"--resume: no restorable sweep '{spec.resume}' named "
                              f"{spec.name!r} under {storage}")
    else:
        sweep_id = f"{spec.name}-{_dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid() % 10000:04d}"
    uri = resolve_uri(spec.mlflow_uri)
    store = TrackingStore(uri)  # the driver's writes happen before and after the trials
    exp_id = store.experiment(spec.name)
    started_ray = _init_ray(spec)  # before the parent run: a bad address leaves no RUNNING run
    import ray

    try:
        parent = store.start_sweep(
            exp_id, sweep_id, run_name=sweep_id,
            params={**{f"grid.{k}": v for k, v in spec.grid.items()},
                    **{f"fixed.{k}": v for k, v in spec.fixed.items()},
                    "cpus_per_trial": spec.cpus_per_trial, "gpus_per_trial": spec.gpus_per_trial,
                    "max_failures": spec.max_failures, "n_trials": len(configs)},
            tags={"recsec.storage": f"{storage}/{sweep_id}"})
    except BaseException:  # e.g. a resume with another grid: leave no Ray behind
        if started_ray:
            ray.shutdown()
        raise

    writer = llm = llm_placement = None
    t0 = time.time()
    try:
        writer = start_writer(uri, sweep_id, wait=False) if is_sqlite(uri) else None
        llm, llm_placement = _start_llm(configs, spec, sweep_id)
        if llm_placement:
            store.set_tags(parent, {"recsec.llm.placement": json.dumps(llm_placement)})
        ctx = TrialContext(uri=uri, experiment_id=exp_id, parent_run_id=parent,
                           writer=writer_name(sweep_id) if writer is not None else None,
                           cpus=spec.cpus_per_trial, progress=spec.progress, llm_service=llm)
        resources = {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial}
        fn = tune.with_resources(tune.with_parameters(trainable, ctx=ctx), resources)
        _DRIVER_STATE[sweep_id] = (ctx, len(configs))
        run_config = tune.RunConfig(
            name=sweep_id, storage_path=storage, verbose=spec.verbose,
            callbacks=[SweepCallback(sweep_id)],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures))
        if spec.resume:
            tuner = tune.Tuner.restore(f"{storage}/{sweep_id}", trainable=fn,
                                       resume_unfinished=True, restart_errored=True)
        else:
            space: dict[str, Any] = {k: tune.grid_search([pin_path(k, x) for x in v])
                                     for k, v in spec.grid.items()}
            space[_FIXED] = {k: pin_path(k, v) for k, v in spec.fixed.items()}
            tuner = tune.Tuner(fn, param_space=space, run_config=run_config,
                               tune_config=tune.TuneConfig(
                                   reuse_actors=True, max_concurrent_trials=spec.max_concurrent,
                                   trial_dirname_creator=_trial_dirname))
        grid = tuner.fit()
        finished_at = time.time()
        wall = finished_at - t0
        rows, errors, unfinished = [], [], []
        for res in grid:
            cfg = res.config or {}
            row = {k: cfg.get(k) for k in cfg if k != _FIXED}
            label = trial_label(row, list(row))
            if res.error is not None:
                errors.append(f"{label}: {_headline(str(res.error))}")
            elif "trial_key" not in (res.metrics or {}):  # stopped (Ctrl+C) before its end
                unfinished.append(label)
            else:
                rows.append({**row, **res.metrics})
        llm_stats, llm = _stop_llm(llm), None
        if llm_stats:
            store.set_tags(parent, {f"recsec.llm.{k}": json.dumps(v, sort_keys=True)
                                    for k, v in llm_stats.items()})
        status = "FAILED" if errors else "KILLED" if unfinished else "FINISHED"
        store.finish_run(parent, status, {"n_trials": len(configs), "n_errors": len(errors),
                                          "n_unfinished": len(unfinished),
                                          "sweep_wall_s": wall})
    except BaseException:
        try:
            store.finish_run(parent, "FAILED")
        except Exception as err:  # noqa: BLE001 -- keep the original error visible
            print(f"[recsec] could not mark the sweep FAILED in MLflow: {err}", file=sys.stderr)
        raise
    finally:
        _DRIVER_STATE.pop(sweep_id, None)
        _stop_llm(llm)
        if writer is not None:
            ray.kill(writer)
        if started_ray:
            ray.shutdown()
    return SweepResult(rows=rows, errors=errors, unfinished=unfinished, tracking_uri=uri,
                       experiment=spec.name, experiment_id=exp_id, parent_run_id=parent,
                       sweep_id=sweep_id,
                       storage=f"{storage}/{sweep_id}", wall_s=wall, llm_stats=llm_stats,
                       llm_placement=llm_placement, finished_at=finished_at)


def report(result: SweepResult, metric: str = "t_hr@50") -> str:
    """The closing text: tables per swept setting, and where MLflow keeps everything."""
    from .compare import format_tables, frame_from_rows

    lines = []
    if result.rows:
        lines.append(format_tables(frame_from_rows(result.rows), metrics=_table_metrics(metric)))
    lines += [f"FAILED trial {err}" for err in result.errors]
    lines += [f"UNFINISHED trial {label}" for label in result.unfinished]
    lines += [
        (f"{len(result.rows)} trial(s) finished, {len(result.errors)} failed, "
         f"{len(result.unfinished)} unfinished, wall {result.wall_s:.0f} s"),
    ]
    if result.llm_stats:
        st = result.llm_stats
        lines.append(f"LLM service: model loads {st.get('model_loads')}, {st.get('calls')} calls, "
                     f"cache hit rate {st.get('cache_hit_rate', 0):.2f}, "
                     f"{st.get('cpu_s', 0):.0f} CPU s")
    lines += [
        f"MLflow tracking URI: {result.tracking_uri}",
        f"MLflow experiment:   {result.experiment} (id {result.experiment_id})",
        f"MLflow parent run:   {result.parent_run_id}",
        f"Tune storage:        {result.storage}  (resume: --resume {result.sweep_id})",
        (f"Compare:             recsec compare --experiment {result.experiment} "
         f"--mlflow-uri {result.tracking_uri}"),
    ]
    return "\n".join(lines)


def _table_metrics(metric: str) -> list[str]:
    return [metric] + [m for m in SUMMARY_METRICS if m != metric]


# ---- shared command line for sweeps/*.py --------------------------------------------------------
def _split(typ: type) -> Callable[[str], list[Any]]:
    def parse(raw: str) -> list[Any]:
        try:
            return [typ(v.strip()) for v in raw.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r}: expected comma-separated "
                                             f"{typ.__name__} values") from None
    return parse


def sweep_parser(description: str | None) -> argparse.ArgumentParser:
    """Flags every sweep script shares (DESIGN §8): mode, where to run, where to log, axes."""
    p = argparse.ArgumentParser(description=description)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny synthetic sweep (tests)")
    mode.add_argument("--full", action="store_true", help="the papers' full study grid")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="SWEEP_ID",
                   help="continue an interrupted sweep (default: the latest of this name)")
    p.add_argument("--name", help="sweep / MLflow experiment name")
    p.add_argument("--ray-address", help="connect to this Ray cluster (default: local Ray)")
    p.add_argument("--mlflow-uri", help="tracking URI (default sqlite:///mlflow.db)")
    p.add_argument("--storage-path", default="sweep_results",
                   help="Tune results and resume state (local folder or s3://, gs://)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0)
    p.add_argument("--max-failures", type=int, default=2)
    p.add_argument("--max-concurrent", type=int, default=None)
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray: logical CPUs")
    p.add_argument("--num-gpus", type=int, default=None, help="local Ray: logical GPUs")
    p.add_argument("--dashboard", action="store_true", help="local Ray dashboard on 127.0.0.1")
    p.add_argument("--llm", choices=("auto", "on", "off"), default="auto",
                   help="start the shared LLM service (auto: when a trial needs it)")
    p.add_argument("--llm-gpus", type=float, default=None,
                   help="GPUs for the LLM actor (default: 1 where the cluster has a GPU)")
    p.add_argument("--llm-cpus", type=float, default=None,
                   help="CPUs reserved for the LLM actor (default: 1 on 8+ CPU clusters, else 0)")
    p.add_argument("--progress", action="store_true", help="tqdm bars inside each job")
    p.add_argument("--metric", default="t_hr@50", help="first column of the final tables")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fixed config override by dotted key, e.g. --set model.dim=32")
    for axis, (key, typ) in AXES.items():
        p.add_argument("--" + axis.replace("_", "-"), type=_split(typ), default=None,
                       metavar="V1,V2", help=f"sweep {key}")
    return p


def spec_from_args(args: argparse.Namespace, *, name: str, grid: dict[str, list[Any]],
                   fixed: dict[str, Any] | None = None,
                   full: dict[str, list[Any]] | None = None,
                   smoke: dict[str, list[Any]] | None = None,
                   smoke_fixed: dict[str, Any] | None = None) -> SweepSpec:
    """Grid and fixed values = the script's default (or its --full / --smoke ones), then the
    axis flags, then --set."""
    chosen = dict(full if args.full and full else smoke if args.smoke and smoke else grid)
    values = dict(smoke_fixed if args.smoke and smoke_fixed is not None else fixed or {})
    for axis, (key, _) in AXES.items():
        given = getattr(args, axis)
        if given is not None:
            values.pop(key, None)
            chosen[key] = given
    for item in args.set:
        key, value = parse_override(item)
        if key in chosen:
            chosen[key] = value if isinstance(value, list) else [value]
        else:
            values[key] = value
    # one-value axes are settings, not dimensions of the table
    for key in [k for k, v in chosen.items() if len(v) == 1 and k not in
                ("attack.poison_rate", "attack.badrec_fraction", "defense.name", "seed")]:
        values[key] = chosen.pop(key)[0]
    suffix = "-smoke" if args.smoke else "-full" if args.full else ""
    return SweepSpec(
        name=args.name or name + suffix, grid=chosen, fixed=values,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_failures=args.max_failures, max_concurrent=args.max_concurrent,
        storage_path=args.storage_path, mlflow_uri=args.mlflow_uri,
        ray_address=args.ray_address, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
        dashboard=args.dashboard, resume=args.resume, llm=args.llm, llm_gpus=args.llm_gpus,
        llm_cpus=args.llm_cpus, progress=args.progress)


def main_sweep(args: argparse.Namespace, **script: Any) -> int:
    """Run a sweep script (``script``: ``spec_from_args``'s keywords), print the closing
    report; one-line errors, exit code 2."""
    try:
        result = run_sweep(spec_from_args(args, **script))
    except RecsecError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2
    print(report(result, args.metric), flush=True)
    return 1 if result.errors or result.unfinished else 0
