"""MLflow tracking for sweeps: one experiment per sweep name, one parent run per sweep, one
child run per trial (DESIGN §7).

SQLite allows one writer at a time, and its 5 s busy timeout turns contention into
"database is locked" errors. So with a ``sqlite:`` store every trial writes through one Ray
actor that owns the only ``MlflowClient`` (calls run one at a time, in order), and every call
here also retries with backoff when the database is busy (a second sweep, ``recsec compare`` or
the MLflow UI may hold it). An ``http(s)://`` tracking server serialises writes itself, so
trials talk to it directly.

Resume is idempotent: each child run carries a deterministic trial key (a hash of the trial's
resolved config). A key that already has a FINISHED run under the parent is not run or logged
again; RUNNING leftovers of attempts that died with their worker or driver are marked FAILED.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

DEFAULT_URI = "sqlite:///mlflow.db"
TAG_PARENT = "mlflow.parentRunId"
TAG_KIND = "recsec.kind"  # "sweep" (parent) or "trial" (child)
TAG_SWEEP_ID = "recsec.sweep_id"
TAG_TRIAL_KEY = "recsec.trial_key"
TAG_ATTEMPT = "recsec.attempt"
TAG_ERROR = "recsec.error"
# The metrics a person reads first: the trial lines, the closing tables, the MLflow view's columns.
HEADLINE_METRICS = ("hr@10", "t_hr@50", "user_f1", "item_f1", "hr@1", "asr@1", "asr_base@1",
                    "asr@10", "asr_base@10")
# MLflow's own experiment tags. MLflow 3 opens an untagged experiment as a GenAI app (traces,
# no runs table); the kind tag marks it a model-training one. MLflow 3.17's UI takes the kind
# from its global GenAI/Model-training switch instead (URL parameter ``workflowType``), so the
# link from :func:`training_view_url` sets that too, and opens a saved view whose columns are
# the swept settings and the headline metrics.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
KIND_TRAINING = "custom_model_development"
TAG_NOTE = "mlflow.note.content"
TAG_VIEW_PREFIX = "mlflow.sharedViewState."
VIEW_KEY = "recsec-trials"
_PARAMS_PER_BATCH = 100  # MLflow's log_batch limits
_METRICS_PER_BATCH = 1000

T = TypeVar("T")


# ---- names and keys ---------------------------------------------------------------------------
def resolve_uri(uri: str | None = None) -> str:
    """None -> $MLFLOW_TRACKING_URI or ``sqlite:///mlflow.db``; relative SQLite paths become
    absolute so Ray workers with another working directory write the same file."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri.removeprefix("sqlite:///")
        if path != ":memory:":
            uri = "sqlite:///" + str(Path(path).resolve())
    elif "://" not in uri:
        raise ConfigError(f"mlflow uri {uri!r}: expected sqlite:///PATH or http(s)://HOST:PORT "
                         "(MLflow 3 refuses the old ./mlruns file store)")
    return uri


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


_BAD_NAME_CHARS = re.compile(r"[^/\w.\- :]")


def metric_name(key: str) -> str:
    """MLflow refuses '@' in metric names: ``hr@10`` is stored as ``hr_at_10``."""
    return _BAD_NAME_CHARS.sub("_", key.replace("@", "_at_"))


def canonical_name(key: str) -> str:
    """Inverse of :func:`metric_name` for the canonical keys (``hr_at_10`` -> ``hr@10``)."""
    return re.sub(r"_at_(\d+)$", r"@\1", key)


def trial_key(flat_config: dict[str, Any]) -> str:
    """Deterministic id of a trial: the same resolved config always gets the same key."""
    blob = json.dumps(flat_config, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _is_locked(err: BaseException) -> bool:
    return "database is locked" in str(err) or "database table is locked" in str(err)


def with_retry(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, retried with exponential backoff (for up to 2 minutes) while
    SQLite reports the database busy."""
    delay, deadline = 0.05, time.monotonic() + 120.0
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # MlflowException or sqlalchemy OperationalError
            if not _is_locked(err) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def training_view_url(ui: str, experiment_id: str) -> str:
    """The experiment's runs page in MLflow's model-training view, with the trials view
    (``ui``: the server's base URL, or "" for a link inside the MLflow UI)."""
    return (f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType="
            f"machine_learning&viewStateShareKey={VIEW_KEY}")


# ---- the store --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialStart:
    run_id: str
    attempt: int
    finished_metrics: dict[str, float] | None  # set when this key already has a FINISHED run


class TrackingStore:
    """All MLflow writes of a sweep. Used directly (http server, tests, the driver) or wrapped
    as the single-writer Ray actor for SQLite (:func:`start_writer`)."""

    def __init__(self, uri: str | None = None):
        from mlflow import MlflowClient

        self.uri = resolve_uri(uri)
        self.client = MlflowClient(tracking_uri=self.uri)

    def ping(self) -> str:
        return self.uri

    # experiments and parent runs
    def experiment(self, name: str) -> str:
        """Id of the experiment ``name``, created if missing (artifacts beside the SQLite
        file, so every process finds them whatever its working directory) as a model-training
        experiment; an older one without a kind gets it (a kind someone chose is kept)."""
        exp = with_retry(lambda: self.client.get_experiment_by_name(name))
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                with_retry(lambda: self.client.restore_experiment(exp.experiment_id))
            if TAG_EXPERIMENT_KIND not in exp.tags:
                with_retry(self.client.set_experiment_tag, exp.experiment_id,
                           TAG_EXPERIMENT_KIND, KIND_TRAINING)
            return exp.experiment_id
        location = None
        if is_sqlite(self.uri):
            db = Path(self.uri.removeprefix("sqlite:///"))
            slug = re.sub(r"[^\w.-]", "_", name)
            location = (db.parent / "mlruns" / slug).as_uri()
        try:
            return with_retry(lambda: self.client.create_experiment(
                name, artifact_location=location, tags={TAG_EXPERIMENT_KIND: KIND_TRAINING}))
        except Exception:  # created meanwhile by another process
            exp = with_retry(lambda: self.client.get_experiment_by_name(name))
            if exp is None:
                raise
            return exp.experiment_id

    def set_trials_view(self, experiment_id: str, swept: list[str]) -> None:
        """The experiment's saved view (:func:`training_view_url` opens it): every trial run
        in one flat group, the swept settings and headline metrics as columns. Without it the
        table shows only the collapsed parent run and no metric columns."""
        cols = [f"params.`{k}`" for k in swept]
        cols += [f"metrics.`{metric_name(m)}`" for m in HEADLINE_METRICS]
        view = {"selectedColumns": cols,
                "groupBy": {"aggregateFunction": "average",
                            "groupByKeys": [{"mode": "tag", "groupByData": TAG_KIND}]},
                "orderByKey": "attributes.start_time", "orderByAsc": True}
        with_retry(self.client.set_experiment_tag, experiment_id, TAG_VIEW_PREFIX + VIEW_KEY,
                   json.dumps(view))
        exp = with_retry(self.client.get_experiment, experiment_id)
        if TAG_NOTE not in exp.tags:  # the experiment's description: never overwrite one
            url = training_view_url("", experiment_id)
            with_retry(self.client.set_experiment_tag, experiment_id, TAG_NOTE,
                       f"recsec sweep. [Every trial, headline metrics as columns]({url})")

    def start_sweep(self, experiment_id: str, sweep_id: str, *, run_name: str,
                    params: dict[str, Any], tags: dict[str, str]) -> str:
        """Parent run of the sweep ``sweep_id``; a resumed sweep gets its old parent back."""
        found = self._search(experiment_id, f"tags.`{TAG_SWEEP_ID}` = '{sweep_id}' and "
                                            f"tags.`{TAG_KIND}` = 'sweep'")
        if found:
            run_id = found[0].info.run_id
            _check_same_grid(sweep_id, found[0].data.params, params)
            with_retry(lambda: self.client.update_run(run_id, status="RUNNING"))
            return run_id
        run = with_retry(lambda: self.client.create_run(
            experiment_id, run_name=run_name,
            tags={TAG_KIND: "sweep", TAG_SWEEP_ID: sweep_id, **tags}))
        self._log_params(run.info.run_id, params)
        return run.info.run_id

    def finish_run(self, run_id: str, status: str = "FINISHED",
                   metrics: dict[str, float] | None = None) -> None:
        if metrics:
            self.log_metrics(run_id, metrics)
        with_retry(lambda: self.client.set_terminated(run_id, status))

    def find_sweep(self, experiment_name: str):
        """The parent run of the latest sweep in ``experiment_name``."""
        exp = with_retry(lambda: self.client.get_experiment_by_name(experiment_name))
        if exp is None:
            return None
        flt = f"tags.`{TAG_KIND}` = 'sweep'"
        runs = self._search(exp.experiment_id, flt, order_by=["attributes.start_time DESC"])
        return runs[0] if runs else None

    # trial runs
    def start_trial(self, experiment_id: str, parent_run_id: str, key: str, *, run_name: str,
                    params: dict[str, Any], tags: dict[str, str] | None = None) -> TrialStart:
        """Child run for one attempt of a trial, or the finished run if the key is done."""
        runs = self.trial_runs(experiment_id, parent_run_id, key)
        for run in runs:
            if run.info.status == "FINISHED":
                return TrialStart(run.info.run_id, len(runs),
                                  {canonical_name(k): v for k, v in run.data.metrics.items()})
        self._fail_running(runs, "attempt ended without finishing (its worker or the driver "
                                 "died); superseded by a retry")
        attempt = len(runs) + 1
        run = with_retry(lambda: self.client.create_run(
            experiment_id, run_name=run_name,
            tags={TAG_PARENT: parent_run_id, TAG_KIND: "trial", TAG_TRIAL_KEY: key,
                  TAG_ATTEMPT: str(attempt), "recsec.host": socket.gethostname(),
                  **(tags or {})}))
        self._log_params(run.info.run_id, params)
        return TrialStart(run.info.run_id, attempt, None)

    def fail_trial(self, experiment_id: str, parent_run_id: str, key: str, reason: str) -> int:
        """Mark the RUNNING runs of ``key`` FAILED (the driver calls this when Tune reports
        the trial's worker gone). Returns how many were marked."""
        runs = self.trial_runs(experiment_id, parent_run_id, key)
        return self._fail_running(runs, reason)

    def trial_runs(self, experiment_id: str, parent_run_id: str, key: str | None = None):
        flt = f"tags.`{TAG_PARENT}` = '{parent_run_id}'"
        if key is not None:
            flt += f" and tags.`{TAG_TRIAL_KEY}` = '{key}'"
        return self._search(experiment_id, flt, order_by=["attributes.start_time ASC"])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None,
                    timestamp_ms: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = timestamp_ms or int(time.time() * 1000)
        items = [Metric(metric_name(k), float(v), ts, step or 0)
                 for k, v in metrics.items() if _is_number(v)]
        for i in range(0, len(items), _METRICS_PER_BATCH):
            chunk = items[i:i + _METRICS_PER_BATCH]
            with_retry(self.client.log_batch, run_id, metrics=chunk)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        with_retry(lambda: self.client.log_batch(run_id, tags=batch))

    def log_files(self, run_id: str, files: dict[str, bytes], artifact_path: str | None = None
                  ) -> None:
        """Artifacts sent as bytes, so a trial on another node can log through the writer."""
        with tempfile.TemporaryDirectory() as tmp:
            for rel, blob in files.items():
                dest = Path(tmp) / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(blob)
            with_retry(lambda: self.client.log_artifacts(run_id, tmp, artifact_path))

    def finish_trial(self, run_id: str, metrics: dict[str, float], files: dict[str, bytes],
                     tags: dict[str, str] | None = None) -> None:
        """Everything a successful attempt leaves, then FINISHED (last, so a run marked
        FINISHED is always complete)."""
        if tags:
            self.set_tags(run_id, tags)
        if files:
            self.log_files(run_id, files)
        self.finish_run(run_id, "FINISHED", metrics)

    def fail_attempt(self, run_id: str, error: str) -> None:
        self.set_tags(run_id, {TAG_ERROR: error})
        self.finish_run(run_id, "FAILED")

    # helpers
    def _search(self, experiment_id: str, flt: str, order_by: list[str] | None = None):
        out, token = [], None
        while True:
            page = with_retry(self.client.search_runs, [experiment_id], flt, max_results=1000,
                              order_by=order_by, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def _fail_running(self, runs: Iterable[Any], reason: str) -> int:
        n = 0
        for run in runs:
            if run.info.status == "RUNNING":
                self.fail_attempt(run.info.run_id, reason)
                n += 1
        return n

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), _PARAMS_PER_BATCH):
            chunk = items[i:i + _PARAMS_PER_BATCH]
            with_retry(self.client.log_batch, run_id, params=chunk)


def _check_same_grid(sweep_id: str, logged: dict[str, str], params: dict[str, Any]) -> None:
    """A resumed sweep must be the one started: Tune restores its own trials, but the trial
    count, the tables and whether the shared LLM service starts come from the command line."""
    now = {k: _param_value(v) for k, v in params.items() if k.startswith(("grid.", "fixed."))}
    was = {k: v for k, v in logged.items() if k.startswith(("grid.", "fixed."))}
    diff = sorted(k for k in {*now, *was} if was.get(k) != now.get(k))
    if diff:
        shown = "; ".join(f"{k}: started {was.get(k)!r}, now {now.get(k)!r}" for k in diff[:4])
        raise ConfigError(f"--resume {sweep_id}: the command line gives another grid than the "
                          f"sweep was started with ({shown}); repeat its original flags")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) or \
        type(v).__module__ == "numpy" and getattr(v, "ndim", 1) == 0


def _param_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v))
    return "None" if v is None else str(v)


def files_under(root: str | Path) -> dict[str, bytes]:
    """Every file below ``root`` as {relative path: bytes} (artifacts are small: configs,
    detection scores, curves, plots)."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---- single-writer actor ----------------------------------------------------------------------
def writer_name(sweep_id: str) -> str:
    return f"recsec-mlflow-writer-{sweep_id}"


def start_writer(uri: str, sweep_id: str, *, wait: bool = True):
    """The sweep's one MLflow writer, pinned to the driver's node (where the SQLite file is).
    Calls from all trials queue on it and run one at a time. ``wait=False`` returns at once
    (the name is registered already; calls queue until the actor is up), so the writer's
    start overlaps the first trials' start."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor_cls = ray.remote(TrackingStore)
    handle = actor_cls.options(
        name=writer_name(sweep_id), num_cpus=0, max_concurrency=1, max_restarts=-1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                          soft=False),
    ).remote(uri)
    if wait:
        ray.get(handle.ping.remote())
    return handle


def _find_actor(name: str, timeout_s: float = 60.0):
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get_actor(name)
        except ValueError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class TrialTracker:
    """What a trial uses: the writer actor when there is one, else a direct store. Method calls
    block until written, except per-epoch metrics, which queue behind later calls."""

    def __init__(self, uri: str, writer: str | None):
        self._actor = None
        self._store: TrackingStore | None = None
        self._pending: list[Any] = []
        if writer:
            self._actor = _find_actor(writer)
        else:
            self._store = TrackingStore(uri)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._actor is None:
            return getattr(self._store, method)(*args, **kwargs)
        import ray

        ref = getattr(self._actor, method).remote(*args, **kwargs)
        out = ray.get(ref)
        self.flush()
        return out

    def submit(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Fire and forget (still in order: an actor runs one caller's calls in order)."""
        if self._actor is None:
            getattr(self._store, method)(*args, **kwargs)
        else:
            self._pending.append(getattr(self._actor, method).remote(*args, **kwargs))

    def flush(self) -> None:
        if self._pending:
            import ray

            pending, self._pending = self._pending, []
            ray.get(pending)
