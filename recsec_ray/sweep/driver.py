"""Running a sweep: check, start Ray and the shared services, run the grid with Tune, record.

Order matters for a person waiting at the console: configs, data, models and the MLflow store
are checked before Ray starts (``preflight``), so a fresh machine without data stops in
seconds with one line; Ray, the MLflow writer and the LLM actor start only after that.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RecsecError
from ..tracking import TrackingStore, is_sqlite, resolve_uri, start_writer, writer_name
from . import preflight
from .grid import SweepSpec, expand, param_space, point_of, trial_label
from .service import start_llm, stop_llm
from .trainable import TrialContext, trainable, trial_dirname

PATH_ENV = ("RECSEC_DATA_DIR", "RECSEC_CACHE_DIR")


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]  # one per finished trial: swept values + final metrics
    errors: list[str]  # trials that failed (after retries, if their error could heal)
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
    trials: list[dict[str, Any]] | None = None  # every trial: swept values, status, metrics
    swept: list[str] | None = None  # the grid's keys (the trials' identifying columns)
    notes: list[str] | None = None  # what the preflight said (files the trials download)
    artifacts: list[str] | None = None  # what the parent run holds (tables, plots)


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


def storage_root(spec: SweepSpec) -> str:
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


def _sweep_id(spec: SweepSpec, storage: str) -> str:
    if not spec.resume:
        return f"{spec.name}-{_dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid() % 10000:04d}"
    from ray.tune import Tuner  # imports Tune; starts nothing

    sweep_id = find_resumable(storage, spec.name) if spec.resume == "latest" else spec.resume
    if not sweep_id or not Tuner.can_restore(f"{storage}/{sweep_id}"):
        raise RecsecError(f"--resume: no restorable sweep '{spec.resume}' named "
                          f"{spec.name!r} under {storage}")
    return sweep_id


def _tuner(spec: SweepSpec, ctx: TrialContext, sweep_id: str, storage: str):
    from ray import tune

    from .progress import SweepCallback

    resources = {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial}
    fn = tune.with_resources(tune.with_parameters(trainable, ctx=ctx), resources)
    if spec.resume:  # Tune restores the run config (callbacks included) it pickled
        return tune.Tuner.restore(f"{storage}/{sweep_id}", trainable=fn,
                                  resume_unfinished=True, restart_errored=True)
    run_config = tune.RunConfig(
        name=sweep_id, storage_path=storage, verbose=0 if spec.verbose < 2 else 1,
        callbacks=[SweepCallback(sweep_id, spec.verbose)],
        failure_config=tune.FailureConfig(max_failures=spec.max_failures))
    return tune.Tuner(fn, param_space=param_space(spec), run_config=run_config,
                      tune_config=tune.TuneConfig(
                          reuse_actors=True, max_concurrent_trials=spec.max_concurrent,
                          trial_dirname_creator=trial_dirname))


def _collect(grid: Any) -> tuple[list, list, list, list]:
    """Tune's results as rows (finished), errors, unfinished labels, and every trial."""
    from .progress import headline

    rows, errors, unfinished, trials = [], [], [], []
    for res in grid:
        row = point_of(res.config or {})
        label = trial_label(row, list(row))
        metrics = res.metrics or {}
        if res.error is not None:
            error = headline(str(res.error))
            errors.append(f"{label}: {error}")
            trials.append({**row, "status": "FAILED", "error": error})
        elif "trial_key" not in metrics:  # stopped (Ctrl+C) before its end
            unfinished.append(label)
            trials.append({**row, "status": "unfinished"})
        else:
            rows.append({**row, **metrics})
            trials.append({**row, "status": "done", **metrics})
    return rows, errors, unfinished, trials


def run_sweep(spec: SweepSpec) -> SweepResult:
    """Run (or resume) the sweep; blocks until every trial has finished or given up."""
    configs = expand(spec)
    storage = storage_root(spec)
    uri = resolve_uri(spec.mlflow_uri)
    notes = preflight.check(configs, uri=uri, storage=storage, llm_on=spec.llm == "on") \
        if spec.preflight else []
    for note in notes:
        print(f"[recsec] {note}", flush=True)
    sweep_id = _sweep_id(spec, storage)
    store = TrackingStore(uri)  # the driver's writes happen before and after the trials
    exp_id = store.experiment(spec.name)
    started_ray = _init_ray(spec)  # before the parent run: a bad address leaves no RUNNING run
    import ray

    from .progress import DRIVER_STATE, DriverState, quiet_tune
    from .summary import log_results

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
        store.set_trials_view(exp_id, list(spec.grid))  # after start_sweep refused no resume
        writer = start_writer(uri, sweep_id, wait=False) if is_sqlite(uri) else None
        llm, llm_placement = start_llm(configs, spec, sweep_id)
        if llm_placement:
            store.set_tags(parent, {"recsec.llm.placement": json.dumps(llm_placement)})
        ctx = TrialContext(uri=uri, experiment_id=exp_id, parent_run_id=parent,
                           writer=writer_name(sweep_id) if writer is not None else None,
                           cpus=spec.cpus_per_trial, progress=spec.progress, llm_service=llm)
        DRIVER_STATE[sweep_id] = DriverState(ctx, len(configs))
        with quiet_tune(spec.verbose < 2):
            grid = _tuner(spec, ctx, sweep_id, storage).fit()
        finished_at = time.time()
        wall = finished_at - t0
        rows, errors, unfinished, trials = _collect(grid)
        llm_stats, llm = stop_llm(llm), None
        if llm_stats:
            store.set_tags(parent, {f"recsec.llm.{k}": json.dumps(v, sort_keys=True)
                                    for k, v in llm_stats.items()})
        with tempfile.TemporaryDirectory(prefix="recsec-results-") as out:
            artifacts = log_results(store, spec, parent, trials, Path(out))
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
        DRIVER_STATE.pop(sweep_id, None)
        stop_llm(llm)
        if writer is not None:
            ray.kill(writer)
        if started_ray:
            ray.shutdown()
    return SweepResult(rows=rows, errors=errors, unfinished=unfinished, tracking_uri=uri,
                       experiment=spec.name, experiment_id=exp_id, parent_run_id=parent,
                       sweep_id=sweep_id, storage=f"{storage}/{sweep_id}", wall_s=wall,
                       llm_stats=llm_stats, llm_placement=llm_placement,
                       finished_at=finished_at, trials=trials, swept=list(spec.grid), notes=notes,
                       artifacts=artifacts)
