"""Sweeps on Ray Tune with MLflow tracking: real Ray, real MLflow, the real job on synthetic data.

The fault tests of issue 8 (kill a trial's worker, the shared LLM actor, the driver) run in
the default suite, so CI runs them; only the MLflow-server and script smoke tests are slow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from recsec_ray.errors import ConfigError
from recsec_ray.sweep import (
    AXES,
    SweepSpec,
    expand,
    report,
    run_sweep,
    spec_from_args,
    sweep_parser,
)
from recsec_ray.tracking import (
    KIND_TRAINING,
    TAG_EXPERIMENT_KIND,
    TAG_PARENT,
    TAG_TRIAL_KEY,
    TrackingStore,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = {"data.name": "synthetic", "data.synthetic_users": 120, "data.synthetic_items": 80,
        "model.backbone": "sasrec", "model.dim": 16, "model.heads": 1, "model.epochs": 2,
        "attack.name": "bandwagon", "defense.lorec_start_epoch": 1}


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory):
    """An empty MLflow database, migrated once (alembic takes seconds) and copied per test."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    TrackingStore(f"sqlite:///{path}")
    return path


def _spec(tmp_path: Path, name: str, **kw) -> SweepSpec:
    base = {"name": name, "grid": {"attack.poison_rate": [0.05, 0.1], "defense.name": ["none"],
                                   "seed": [0]},
            "fixed": dict(TINY), "storage_path": str(tmp_path / "tune"),
            "mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "verbose": 0}
    base.update(kw)
    return SweepSpec(**base)


def _children(store: TrackingStore, result) -> list:
    return store.trial_runs(result.experiment_id, result.parent_run_id)


@pytest.fixture(scope="module")
def ray_gpus():
    """Local Ray with 2 logical GPUs (no real GPU needed: Ray only books them)."""
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_cli_axes_build_the_grid():
    args = sweep_parser("t").parse_args(
        ["--poison-rate", "0.01,0.1", "--defense", "none,lorec", "--backbone", "gru4rec",
         "--set", "model.dim=32", "--smoke"])
    spec = spec_from_args(args, name="pr", grid={"seed": [0]}, smoke={"seed": [0, 1]},
                          smoke_fixed={"data.name": "synthetic"})
    assert spec.name == "pr-smoke"
    assert spec.grid == {"seed": [0, 1], "attack.poison_rate": [0.01, 0.1],
                         "defense.name": ["none", "lorec"]}
    assert spec.fixed == {"data.name": "synthetic", "model.backbone": "gru4rec",
                          "model.dim": 32}
    assert len(expand(spec)) == 8
    assert set(AXES) >= {"dataset", "backbone", "attack", "poison_rate", "defense", "seed",
                         "epochs", "items"}


def test_longest_expected_trials_start_first_and_configs_round_trip():
    from recsec_ray.sweep.grid import FIXED, POINT, job_config, label_of, param_space, points

    spec = SweepSpec(name="order", grid={"attack.poison_rate": [0.01, 0.1],
                                         "defense.name": ["none", "lorec"], "seed": [0, 1]},
                     fixed={"data.name": "synthetic", "attack.name": "bandwagon"})
    order = [(p["defense.name"], p["attack.poison_rate"], p["seed"]) for p in points(spec)]
    assert order == [("lorec", 0.1, 0), ("lorec", 0.1, 1), ("lorec", 0.01, 0),
                     ("lorec", 0.01, 1), ("none", 0.1, 0), ("none", 0.1, 1),
                     ("none", 0.01, 0), ("none", 0.01, 1)]
    space = param_space(spec)
    assert [p for p in space[POINT]["grid_search"]] == points(spec)
    config = {POINT: points(spec)[2], FIXED: space[FIXED]}
    cfg = job_config(config)
    assert (cfg.defense.name, cfg.attack.poison_rate, cfg.seed) == ("lorec", 0.01, 0)
    assert label_of(config) == "poison_rate=0.01 defense=lorec seed=0"
    # a sweep started before points existed (one top-level key per swept value) resumes
    old = {"attack.poison_rate": 0.01, "defense.name": "lorec", "seed": 0, FIXED: space[FIXED]}
    assert job_config(old) == cfg and label_of(old) == label_of(config)


def test_bad_grid_point_fails_before_any_trial(tmp_path):
    spec = _spec(tmp_path, "bad", grid={"attack.poison_rate": [0.05, 1.5]})
    with pytest.raises(ConfigError, match=r"attack.poison_rate.*grid point"):
        run_sweep(spec)
    assert not (tmp_path / "mlflow.db").exists()


def test_ray_started_by_a_sweep_gets_absolute_data_folders(tmp_path, monkeypatch):
    """`export RECSEC_DATA_DIR=../data`: workers inherit the driver's environment when the
    sweep starts Ray, but run trials in their own directories."""
    import ray

    from recsec_ray.sweep import driver as S

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(os.environ))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECSEC_DATA_DIR", "../data")
    monkeypatch.setenv("RECSEC_CACHE_DIR", "~/c")
    assert S._init_ray(_spec(tmp_path, "env")) is True
    assert seen["RECSEC_DATA_DIR"] == str(tmp_path.parent / "data")
    assert seen["RECSEC_CACHE_DIR"] == os.path.expanduser("~/c")


def test_relative_paths_reach_the_trials_and_a_bad_file_is_named(tmp_path, ray_gpus,
                                                                  migrated_db, monkeypatch):
    """Relative file names work from a trial's own directory, and a trial's DataFileError
    reaches the driver as its one line."""
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    shutil.copytree(ROOT / "tests" / "data" / "custom", tmp_path / "in")
    good = (tmp_path / "in" / "interactions.csv").read_text()
    (tmp_path / "in" / "bad.csv").write_text(good + "u10,m30,yesterday,4\n")
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path, "relpaths", max_failures=0,
                 grid={"data.interactions": ["in/interactions.csv", "in/bad.csv"]},
                 fixed={**TINY, "data.name": "custom", "data.titles": "in/titles.csv",
                        "data.k_core": 1, "attack.name": "none", "attack.n_targets": 1})
    result = run_sweep(spec)
    assert len(result.rows) == 1, result.errors
    n_lines = len(good.splitlines()) + 1
    assert len(result.errors) == 1 and f"bad.csv:{n_lines}:" in result.errors[0], result.errors


def test_one_child_run_per_trial_and_resume_adds_nothing(tmp_path, ray_gpus, migrated_db):
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    spec = _spec(tmp_path, "smoke")
    result = run_sweep(spec)
    assert not result.errors and len(result.rows) == 2
    store = TrackingStore(result.tracking_uri)
    parent = store.client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    runs = _children(store, result)
    assert len(runs) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags[TAG_PARENT] for r in runs} == {result.parent_run_id}
    assert len({r.data.tags[TAG_TRIAL_KEY] for r in runs}) == 2
    for run in runs:
        assert run.data.params["data.tie_rule"] == "file"
        assert run.data.params["data.name"] == "synthetic"
        assert 0.0 <= run.data.metrics["hr_at_10"] <= 1.0
        assert "t_hr_at_50" in run.data.metrics
        arts = {a.path for a in store.client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "curves.json", "user_scores.parquet"} <= arts
        curve = store.client.get_metric_history(run.info.run_id, "epoch/loss")
        assert sorted(m.step for m in curve) == [0, 1]
    rates = sorted(r["attack.poison_rate"] for r in result.rows)
    assert rates == [0.05, 0.1]
    text = report(result)
    assert "| none |" in text and result.parent_run_id in text
    assert result.tracking_uri in text
    # every trial's line once, at the end; the view MLflow opens as a training experiment
    assert "### every trial" in text and text.count("| done |") == 2
    assert "workflowType=machine_learning" in text
    exp = store.client.get_experiment(result.experiment_id)
    assert exp.tags[TAG_EXPERIMENT_KIND] == KIND_TRAINING
    # the parent run carries the tables and plots
    arts = {a.path for a in store.client.list_artifacts(result.parent_run_id, "results")}
    assert {"results/tables.md", "results/runs.csv", "results/trials.md",
            "results/trials.csv"} <= arts and set(result.artifacts) == arts
    assert any(a.endswith(".png") for a in arts)
    tables = store.client.download_artifacts(result.parent_run_id, "results/tables.md",
                                             str(tmp_path))
    assert "### hr@10" in Path(tables).read_text()

    # resuming the finished sweep runs nothing and logs nothing new
    again = run_sweep(_spec(tmp_path, "smoke", resume="latest"))
    assert again.parent_run_id == result.parent_run_id
    assert sorted(r.info.run_id for r in _children(store, again)) == \
        sorted(r.info.run_id for r in runs)
    assert len(again.rows) == 2
    # a resume with another grid is refused before anything runs
    other = {"attack.poison_rate": [0.05], "defense.name": ["none"], "seed": [0]}
    with pytest.raises(ConfigError, match="another grid"):
        run_sweep(_spec(tmp_path, "smoke", resume="latest", grid=other))


def test_gpu_requests_and_one_llm_load_per_sweep(tmp_path, ray_gpus, migrated_db):
    """With 2 logical GPUs: the LLM actor holds one whole GPU, trials asking for half a GPU
    get half of the other; every trial calls the one shared service, which loaded each of
    its models exactly once for the whole sweep."""
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    spec = _spec(tmp_path, "gpu-llm", cpus_per_trial=0.5, gpus_per_trial=0.5,
                 grid={"attack.poison_rate": [0.05, 0.1, 0.2], "defense.name": ["lorec"],
                       "seed": [0]})
    result = run_sweep(spec)
    assert not result.errors
    llm_gpus = result.llm_placement["gpu_ids"]
    assert len(llm_gpus) == 1 and result.llm_placement["resources"].get("GPU") == 1.0
    assert result.llm_stats["model_loads"] and \
        set(result.llm_stats["model_loads"].values()) == {1}
    store = TrackingStore(result.tracking_uri)
    runs = _children(store, result)
    assert len(runs) == 3
    for run in runs:
        assert json.loads(run.data.tags["recsec.resources"]) == {"CPU": 0.5, "GPU": 0.5}
        gpus = json.loads(run.data.tags["recsec.gpu_ids"])
        assert len(gpus) == 1 and gpus != llm_gpus
        assert run.data.tags["recsec.llm.service_pid"] == str(result.llm_placement["pid"])
        assert int(run.data.tags["recsec.llm.calls"]) > 0
    parent = store.client.get_run(result.parent_run_id)
    assert json.loads(parent.data.tags["recsec.llm.model_loads"]) == \
        result.llm_stats["model_loads"]


def test_a_trial_whose_error_cannot_heal_fails_once_and_is_reported(tmp_path, ray_gpus,
                                                                  migrated_db, capsys):
    """A config only the data can refuse (more targets than items) raises ConfigError in
    the trial: one attempt, no retries although max_failures=2, the sweep goes on and reports
    it; the console shows one line per event, not Tune's status table."""
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    spec = _spec(tmp_path, "no-retry", max_failures=2, verbose=1,
                 grid={"attack.n_targets": [1, 500], "defense.name": ["none"], "seed": [0]})
    result = run_sweep(spec)
    out = capsys.readouterr().out
    assert len(result.rows) == 1 and len(result.errors) == 1, result.errors
    assert "ConfigError: attack.n_targets" in result.errors[0]
    store = TrackingStore(result.tracking_uri)
    runs = _children(store, result)
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(runs) == 2 and len(failed) == 1  # one attempt, never retried
    assert failed[0].data.tags["recsec.attempt"] == "1"
    assert "attack.n_targets" in failed[0].data.tags["recsec.error"]
    assert store.client.get_run(result.parent_run_id).info.status == "FAILED"
    trials = store.client.download_artifacts(result.parent_run_id, "results/trials.md",
                                             str(tmp_path))
    assert "| FAILED |" in Path(trials).read_text()
    lines = [ln for ln in out.splitlines() if ln.startswith("[recsec] ")]
    fail = [ln for ln in lines if "FAILED attack.n_targets=500" in ln]
    assert len(fail) == 1 and "not retried" in fail[0] and "1 failed" in fail[0]
    assert not any("RETRY" in ln for ln in lines)
    done = [ln for ln in lines if "done attack.n_targets=1 " in ln]
    assert len(done) == 1 and "hr@10=" in done[0]
    assert re.match(r"\[recsec\] [12]/2 done, [01] running, [01] failed, ", done[0])
    assert "Trial status" not in out and "Current time" not in out  # Tune's table is off
    assert "FAILED trial attack.n_targets=500" in report(result)


# ---- faults (issue 8) ---------------------------------------------------------------------------
def _poll(store: TrackingStore, experiment: str, until, timeout: float = 900.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exp = store.client.get_experiment_by_name(experiment)
        if exp is not None:
            runs = store._search(exp.experiment_id, "tags.`recsec.kind` = 'trial'")
            hit = until(store, runs)
            if hit:
                return hit
        time.sleep(0.5)
    raise AssertionError("timed out waiting for the sweep")


def test_killed_trial_worker_is_retried_failed_then_finished(tmp_path, ray_gpus):
    """SIGKILL a trial's worker once it has logged an epoch: Tune retries the trial, MLflow
    shows the dead attempt FAILED and the retry FINISHED, the sweep completes."""
    # long enough (~0.1 s an epoch here) that the killer, polling MLflow every 0.5 s, always
    # finds it mid-training: 12 epochs once finished in 2 s, before the first poll saw it
    fixed = dict(TINY, **{"model.epochs": 150, "model.patience": 150})
    spec = _spec(tmp_path, "kill-trial", fixed=fixed, max_failures=2,
                 grid={"attack.poison_rate": [0.05], "defense.name": ["none"], "seed": [0]})
    store = TrackingStore(spec.mlflow_uri)
    killed: dict = {}

    def mid_training(store, runs):
        for run in runs:
            if run.info.status == "RUNNING" and store.client.get_metric_history(
                    run.info.run_id, "epoch/loss"):
                return run
        return None

    def killer():
        run = _poll(store, "kill-trial", mid_training)
        killed["pid"] = int(run.data.tags["recsec.pid"])
        killed["run"] = run.info.run_id
        killed["at"] = time.time()
        os.kill(killed["pid"], signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = run_sweep(spec)
    thread.join(timeout=5)
    assert "pid" in killed, "the trial finished before it could be killed"
    assert not result.errors and len(result.rows) == 1
    runs = _children(store, result)
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
    assert runs[0].info.run_id == killed["run"]
    assert runs[0].data.tags[TAG_TRIAL_KEY] == runs[1].data.tags[TAG_TRIAL_KEY]
    assert runs[1].data.tags["recsec.attempt"] == "2"
    assert int(runs[1].data.tags["recsec.pid"]) != killed["pid"]
    print(f"\n[fault] trial worker killed: runs lost 0, retries 1; marked FAILED after "
          f"{runs[0].info.end_time / 1000 - killed['at']:.1f} s, retry running after "
          f"{runs[1].info.start_time / 1000 - killed['at']:.1f} s")


def _script(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "sweeps" / "poison_rate.py"), "--smoke",
            "--num-cpus", "2", "--storage-path", str(tmp_path / "tune"),
            "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--poison-rate", "0.02,0.05,0.1,0.2", "--epochs", "6", *extra]


def test_killed_driver_resumes_with_one_finished_run_per_trial(tmp_path):
    """SIGKILL the sweep's driver once a trial has finished and another is mid-way; ``--resume``
    completes the sweep with exactly one FINISHED run per trial."""
    store = TrackingStore(f"sqlite:///{tmp_path / 'mlflow.db'}")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    first = subprocess.Popen(_script(tmp_path), cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        def one_done_one_running(store, runs):
            status = [r.info.status for r in runs]
            return "FINISHED" in status and "RUNNING" in status

        _poll(store, "poison_rate-smoke", one_done_one_running)
        ray_procs = psutil.Process(first.pid).children(recursive=True)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    # Ray's processes share the driver's fate: GCS, raylet, workers and the MLflow writer
    # within seconds, the node agents after their 60 s health check
    _, alive = psutil.wait_procs(ray_procs, timeout=150)
    assert not alive, [p.pid for p in alive]
    before = {r.info.run_id: r.info.status for r in store._search(
        store.find_sweep("poison_rate-smoke").info.experiment_id, "tags.`recsec.kind` = 'trial'")}
    started = time.time()
    resumed = subprocess.run(_script(tmp_path, "--resume"), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600, check=False)
    took = time.time() - started
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "MLflow parent run" in resumed.stdout
    parent = store.find_sweep("poison_rate-smoke")
    assert parent.info.status == "FINISHED"
    runs = store.trial_runs(parent.info.experiment_id, parent.info.run_id)
    by_key: dict[str, list[str]] = {}
    for run in runs:
        by_key.setdefault(run.data.tags[TAG_TRIAL_KEY], []).append(run.info.status)
    assert len(by_key) == 4
    for statuses in by_key.values():
        assert statuses.count("FINISHED") == 1
        assert set(statuses) <= {"FINISHED", "FAILED"}
    assert any("FAILED" in s for s in by_key.values())  # the attempt the kill cut short
    kept = sum(1 for r in runs if before.get(r.info.run_id) == "FINISHED")
    print(f"\n[fault] driver killed with {kept} of 4 trials FINISHED in MLflow: runs lost 0, "
          f"duplicated 0; --resume finished the other {4 - kept} in {took:.0f} s "
          f"(a fresh Ray included)")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["attack_matrix", "backdoor"])
def test_sweep_scripts_smoke(tmp_path, script):
    """Each recipe runs end to end (--smoke) and prints its table and where MLflow has it."""
    cmd = [sys.executable, str(ROOT / "sweeps" / f"{script}.py"), "--smoke", "--num-cpus", "2",
           "--max-failures", "0", "--storage-path", str(tmp_path / "tune"),
           "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| none |" in done.stdout and "MLflow parent run" in done.stdout
    parent = TrackingStore(f"sqlite:///{tmp_path / 'mlflow.db'}").find_sweep(f"{script}-smoke")
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
def test_sweep_logs_to_an_mlflow_server_directly(tmp_path, ray_gpus, mlflow_server):
    """An http:// tracking URI: trials talk to the server themselves (no writer actor) and
    the runs, artifacts included, look the same."""
    uri = mlflow_server
    result = run_sweep(_spec(tmp_path, "http", mlflow_uri=uri))
    assert not result.errors and result.tracking_uri == uri
    store = TrackingStore(uri)
    runs = _children(store, result)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        arts = {a.path for a in store.client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "user_scores.parquet"} <= arts


def test_killed_llm_actor_restarts_and_the_sweep_metrics_do_not_change(tmp_path, ray_gpus,
                                                                         migrated_db):
    """SIGKILL the shared LLM actor while trials are calling it: Ray restarts it, the in-flight
    calls are retried, and every trial ends with exactly the metrics of an undisturbed sweep
    (no result cache, so the restarted actor recomputes what it lost)."""
    from recsec_ray.llm.service import NAMESPACE, ActorClient

    fixed = dict(TINY, **{"defense.name": "llm4dec", "llm.cache": False,
                          "llm.cache_dir": str(tmp_path / "llm-cache")})
    grid = {"attack.poison_rate": [0.05, 0.1], "seed": [0]}
    for sub in ("calm", "kill"):
        (tmp_path / sub).mkdir()
        shutil.copy(migrated_db, tmp_path / sub / "mlflow.db")
    calm = run_sweep(_spec(tmp_path / "calm", "llm-calm", fixed=fixed, grid=grid))
    assert not calm.errors and len(calm.rows) == 2
    assert calm.llm_stats["restarted"] is False

    killed: dict = {}
    done = threading.Event()

    def killer():  # polls until the kill or the sweep's end: no deadline to miss under load
        while not done.is_set() and "pid" not in killed:
            names = [a["name"] for a in ray_gpus.util.list_named_actors(all_namespaces=True)
                     if a["namespace"] == NAMESPACE and a["name"].startswith("recsec-llm-")]
            if names:
                try:
                    client = ActorClient(names[0], retries=0)
                    if client.stats()["service"]["calls"] > 0:  # trials are calling it
                        killed["pid"] = client.pid()
                        killed["at"] = time.time()
                        os.kill(killed["pid"], signal.SIGKILL)
                except Exception as err:  # noqa: BLE001 - not up yet: poll again
                    killed["last_poll_error"] = repr(err)
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        hit = run_sweep(_spec(tmp_path / "kill", "llm-kill", fixed=fixed, grid=grid))
    finally:
        done.set()
        thread.join(timeout=30)
    assert "pid" in killed, "the sweep finished before the LLM actor could be killed"
    assert not hit.errors and len(hit.rows) == 2
    assert hit.llm_stats["restarted"] is True and hit.llm_stats["pid"] != killed["pid"]

    def by_rate(rows):
        return {r["attack.poison_rate"]: r for r in rows}

    keys = ("hr@10", "ndcg@10", "t_hr@50", "user_f1", "user_auc")
    for rate, row in by_rate(calm.rows).items():
        for key in keys:
            assert by_rate(hit.rows)[rate][key] == row[key], (rate, key)
    runs = _children(TrackingStore(hit.tracking_uri), hit)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    print(f"\n[fault] LLM actor killed {killed['at'] - (hit.finished_at - hit.wall_s):.1f} s into "
          f"the sweep: runs lost 0, trial failures 0, metrics identical to the calm sweep; "
          f"sweep {hit.wall_s:.0f} s vs {calm.wall_s:.0f} s undisturbed")
