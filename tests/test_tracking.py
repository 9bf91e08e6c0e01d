"""MLflow tracking: nesting, idempotent resume, and SQLite under concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import sqlite3
import threading
import time

import pytest

from recsec_ray.errors import ConfigError
from recsec_ray.tracking import (
    HEADLINE_METRICS,
    KIND_TRAINING,
    TAG_EXPERIMENT_KIND,
    TAG_KIND,
    TAG_NOTE,
    TAG_PARENT,
    TAG_TRIAL_KEY,
    TAG_VIEW_PREFIX,
    VIEW_KEY,
    TrackingStore,
    TrialTracker,
    canonical_name,
    metric_name,
    resolve_uri,
    start_writer,
    training_view_url,
    trial_key,
)


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory):
    """An empty MLflow database, migrated once (alembic takes seconds) and copied per test."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    TrackingStore(f"sqlite:///{path}")
    return path


@pytest.fixture()
def uri(tmp_path, migrated_db):
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_names_and_keys(tmp_path, monkeypatch):
    assert metric_name("hr@10") == "hr_at_10" and canonical_name("hr_at_10") == "hr@10"
    assert canonical_name("epoch/loss") == "epoch/loss"
    assert trial_key({"a": 1, "b": [1, 2]}) == trial_key({"b": [1, 2], "a": 1})
    assert trial_key({"a": 1}) != trial_key({"a": 2})
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(ValueError, match="file store"):
        resolve_uri("./mlruns")


def test_child_runs_nested_and_resume_idempotent(uri):
    store = TrackingStore(uri)
    exp = store.experiment("sweep-a")
    assert store.experiment("sweep-a") == exp
    grid = {"grid.seed": [0, 1], "fixed.model.dim": 16}
    parent = store.start_sweep(exp, "sweep-a-1", run_name="sweep-a-1",
                               params={"n": 2, **grid}, tags={})
    assert store.start_sweep(exp, "sweep-a-1", run_name="x", params=grid, tags={}) == parent
    with pytest.raises(ConfigError, match=r"--resume sweep-a-1: .*grid.seed: started '\[0, 1\]'"):
        store.start_sweep(exp, "sweep-a-1", run_name="x", params={**grid, "grid.seed": [0]},
                          tags={})

    key = trial_key({"seed": 0})
    first = store.start_trial(exp, parent, key, run_name="t0", params={"seed": 0})
    assert first.attempt == 1 and first.finished_metrics is None
    store.log_metrics(first.run_id, {"epoch/loss": 1.0}, step=0)
    # the attempt dies without a word; the retry marks it FAILED and gets a fresh run
    retry = store.start_trial(exp, parent, key, run_name="t0", params={"seed": 0})
    assert retry.attempt == 2 and retry.run_id != first.run_id
    assert store.client.get_run(first.run_id).info.status == "FAILED"
    for step, loss in enumerate([2.0, 1.5]):  # a trial's per-epoch curve, as it trains
        store.log_metrics(retry.run_id, {"epoch/loss": loss}, step=step)
    store.finish_trial(retry.run_id, {"hr@10": 0.25, "t_hr@50": 0.5},
                       {"config.yaml": b"seed: 0\n", "sub/scores.parquet": b"PAR1"})
    run = store.client.get_run(retry.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_PARENT] == parent and run.data.tags[TAG_TRIAL_KEY] == key
    assert run.data.metrics["hr_at_10"] == 0.25 and run.data.params["seed"] == "0"
    hist = store.client.get_metric_history(retry.run_id, "epoch/loss")
    assert [(m.step, m.value) for m in hist] == [(0, 2.0), (1, 1.5)]
    arts = {a.path for a in store.client.list_artifacts(retry.run_id)}
    assert arts == {"config.yaml", "sub"}

    # a finished key is never run or logged again
    again = store.start_trial(exp, parent, key, run_name="t0", params={"seed": 0})
    assert again.run_id == retry.run_id and again.finished_metrics["hr@10"] == 0.25
    runs = store.trial_runs(exp, parent)
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
    assert store.find_sweep("sweep-a").info.run_id == parent
    assert store.find_sweep("sweep-a").data.tags[TAG_KIND] == "sweep"


def test_experiments_open_as_model_training_with_headline_columns(uri):
    """MLflow 3 shows an untagged experiment as a GenAI app; ours carry the model-training
    kind (new ones at creation, older ones when a sweep reuses them, a chosen kind is kept)
    and a saved view whose columns are the swept settings and the headline metrics."""
    store = TrackingStore(uri)
    exp = store.experiment("kind")
    assert store.client.get_experiment(exp).tags[TAG_EXPERIMENT_KIND] == KIND_TRAINING
    assert KIND_TRAINING == "custom_model_development"

    old = store.client.create_experiment("old")  # made before this tag existed
    assert TAG_EXPERIMENT_KIND not in store.client.get_experiment(old).tags
    assert store.experiment("old") == old
    assert store.client.get_experiment(old).tags[TAG_EXPERIMENT_KIND] == KIND_TRAINING
    chosen = store.client.create_experiment("chosen", tags={TAG_EXPERIMENT_KIND: "finetuning"})
    store.experiment("chosen")
    assert store.client.get_experiment(chosen).tags[TAG_EXPERIMENT_KIND] == "finetuning"

    store.set_trials_view(exp, ["attack.poison_rate", "defense.name"])
    tags = store.client.get_experiment(exp).tags
    view = json.loads(tags[TAG_VIEW_PREFIX + VIEW_KEY])
    assert view["selectedColumns"] == [
        "params.`attack.poison_rate`", "params.`defense.name`",
        *[f"metrics.`{metric_name(m)}`" for m in HEADLINE_METRICS]]
    assert view["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": TAG_KIND}]
    url = training_view_url("http://h:5000/", exp)
    assert url == (f"http://h:5000/#/experiments/{exp}/runs?workflowType=machine_learning"
                   f"&viewStateShareKey={VIEW_KEY}")
    assert training_view_url("", exp) in tags[TAG_NOTE]
    store.client.set_experiment_tag(exp, TAG_NOTE, "my own description")
    store.set_trials_view(exp, ["seed"])
    assert store.client.get_experiment(exp).tags[TAG_NOTE] == "my own description"


def test_waits_out_a_held_lock_instead_of_failing(uri):
    """Another process holding SQLite's write lock past its 5 s busy timeout: writes wait
    (backoff) and land; none raises 'database is locked'."""
    store = TrackingStore(uri)
    exp = store.experiment("locked")
    run = store.start_trial(exp, "p", "k", run_name="r", params={})
    path = uri.removeprefix("sqlite:///")
    held = threading.Event()

    def hold():
        con = sqlite3.connect(path, timeout=30)
        con.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(6.5)
        con.rollback()
        con.close()

    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    start = time.monotonic()
    store.log_metrics(run.run_id, {"m": 1.0})
    waited = time.monotonic() - start
    t.join()
    assert waited > 5.0
    assert store.client.get_run(run.run_id).data.metrics["m"] == 1.0


def _hammer(uri: str, exp: str, parent: str, worker: int, n: int) -> None:
    store = TrackingStore(uri)
    start = store.start_trial(exp, parent, f"key{worker}", run_name=f"w{worker}",
                              params={"worker": worker})
    for step in range(n):  # one transaction per value: the worst case for SQLite
        store.log_metrics(start.run_id, {"value": float(step)}, step=step)
    store.finish_trial(start.run_id, {"done": 1.0}, {})


def test_eight_processes_write_directly_without_loss(uri):
    """No writer actor (e.g. several sweeps sharing one file): retries keep every value."""
    store = TrackingStore(uri)
    exp = store.experiment("direct")
    parent = store.start_sweep(exp, "direct-1", run_name="d", params={}, tags={})
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(uri, exp, parent, w, 40)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * 8
    runs = store.trial_runs(exp, parent)
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:
        assert len(store.client.get_metric_history(r.info.run_id, "value")) == 40


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_eight_concurrent_trials_through_the_writer_actor(uri, ray_local):
    """The sweep's path for SQLite: 8 concurrent Ray workers, one writer actor."""
    ray = ray_local
    store = TrackingStore(uri)
    exp = store.experiment("actor")
    parent = store.start_sweep(exp, "actor-1", run_name="a", params={}, tags={})
    writer = start_writer(store.uri, "actor-1")

    @ray.remote(num_cpus=0.25)
    def trial(worker: int) -> str:
        tracker = TrialTracker(store.uri, "recsec-mlflow-writer-actor-1")
        start = tracker.call("start_trial", exp, parent, f"key{worker}", run_name=f"t{worker}",
                             params={"worker": worker})
        for step in range(50):
            tracker.submit("log_metrics", start.run_id, {"epoch/loss": 1.0 / (step + 1)},
                           step=step)
        tracker.call("finish_trial", start.run_id, {"hr@10": worker / 10},
                     {"config.yaml": f"worker: {worker}\n".encode()})
        return start.run_id

    run_ids = ray.get([trial.remote(w) for w in range(8)])
    ray.kill(writer)
    runs = store.trial_runs(exp, parent)
    assert sorted(r.info.run_id for r in runs) == sorted(run_ids)
    for r in runs:
        assert r.info.status == "FINISHED"
        assert len(store.client.get_metric_history(r.info.run_id, "epoch/loss")) == 50
        assert [a.path for a in store.client.list_artifacts(r.info.run_id)] == ["config.yaml"]
    assert sorted(r.data.metrics["hr_at_10"] for r in runs) == [w / 10 for w in range(8)]
