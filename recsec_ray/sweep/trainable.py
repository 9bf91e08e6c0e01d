"""One trial: ``recsec_ray.job.run`` wrapped for Ray Tune and logged to its MLflow child run.

The job stays unaware of Tune and MLflow. Errors split in two: a crash (worker killed, node
lost) may heal on another attempt, so Tune retries it; a ``ConfigError``, ``DataFileError`` or
``ModelOutputError`` fails the same way every time, so the trial reports :data:`CANNOT_HEAL`
before raising and the driver's callback stops Tune from retrying it (``progress.py``).
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from ..config import JobConfig
from ..errors import ConfigError, DataFileError, ModelOutputError
from ..tracking import TrialTracker, files_under, trial_key
from .grid import job_config, swept, trial_label

NO_RETRY = (ConfigError, DataFileError, ModelOutputError)
CANNOT_HEAL = "recsec_cannot_heal"  # result key: this attempt's error would repeat on retry


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


def run_params(cfg: JobConfig) -> dict[str, Any]:
    """Flattened config plus which model plays which LLM role (DESIGN §5: record it)."""
    from ..job import needs_llm

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

    from ..job import needs_llm
    from ..job import run as job_fn

    started, cpu_started = time.time(), time.process_time()
    torch.set_num_threads(max(1, int(ctx.cpus)))
    try:
        cfg = job_config(config)
    except ConfigError as err:  # expand() checked it; a config restored from elsewhere may fail
        _stop_retries(tune, err, {})
        raise
    flat = cfg.flat()
    key = trial_key(flat)
    tracker = TrialTracker(ctx.uri, ctx.writer)
    tune_ctx = tune.get_context()
    start = tracker.call(
        "start_trial", ctx.experiment_id, ctx.parent_run_id, key,
        run_name=trial_label(flat, swept(config)).replace(" ", ","), params=run_params(cfg),
        tags={"recsec.pid": str(os.getpid()), "recsec.tune_trial": tune_ctx.get_trial_name(),
              "recsec.resources": json.dumps(tune_ctx.get_trial_resources().required_resources),
              "recsec.gpu_ids": json.dumps([str(g) for g in ray.get_gpu_ids()])})
    base = {"trial_key": key, "mlflow_run_id": start.run_id, "attempt": start.attempt}
    if start.finished_metrics is not None:  # a resumed sweep re-ran a trial MLflow has done
        tune.report({**start.finished_metrics, **base, "reused_run": 1})
        return

    def on_epoch(row: dict[str, Any]) -> None:
        step = int(row.get("epoch", 0))
        values = {k: float(v) for k, v in row.items()
                  if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        tracker.submit("log_metrics", start.run_id, {f"epoch/{k}": v for k, v in values.items()},
                       step=step)
        tune.report({"epoch": step, **values})

    llm = None
    with tempfile.TemporaryDirectory(prefix="recsec-trial-") as art:
        try:
            if needs_llm(cfg):
                from ..llm import get_client

                llm = get_client(cfg.llm, service_name=ctx.llm_service)
            metrics = job_fn(cfg, llm=llm, progress=ctx.progress, artifacts_dir=art,
                             on_epoch=on_epoch)
            tracker.flush()
        except BaseException as err:
            tracker.flush()
            tracker.call("fail_attempt", start.run_id, f"{type(err).__name__}: {err}"[:4000])
            _stop_retries(tune, err, base)
            raise
        busy = time.time() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # CPU seconds (all threads) say what a trial costs whatever else shares the machine
        cost = {"trial_busy_s": busy, "trial_cpu_s": time.process_time() - cpu_started,
                "trial_peak_rss_mb": peak}
        tags = llm_tags(llm.stats()) if llm is not None else {}
        tracker.call("finish_trial", start.run_id, {**metrics, **cost}, files_under(art),
                     tags=tags)
    tune.report({**metrics, **cost, **base, "trial_start": started, "trial_end": time.time()})


def _stop_retries(tune: Any, err: BaseException, base: dict[str, Any]) -> None:
    """Tell the driver, before raising, that this error would repeat on every retry."""
    if isinstance(err, NO_RETRY):
        tune.report({CANNOT_HEAL: f"{type(err).__name__}: {err}"[:500], **base})


def llm_tags(stats: dict[str, Any]) -> dict[str, str]:
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


def trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"
