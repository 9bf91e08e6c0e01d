"""The shared LLM service as a named Ray actor: batching across callers, restart, retries."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from recsec_ray.config import LLMConfig
from recsec_ray.llm import LLMRequestError, get_client, start_service, stop_service
from recsec_ray.llm.service import ActorClient

NAME = "recsec-llm-test-actor"


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    # No result cache: every answer here is computed by the actor (the cache has its own tests).
    # The batching test's 8 callers x 4 texts fill one batch of 32, which starts as soon as it
    # is full; the wait is long enough that it forms by size, not by how threads and Ray calls
    # are scheduled, and short enough that the smaller calls below pay little for it.
    return LLMConfig(backend="transformers", max_batch=32, max_wait_ms=3000, cache=False,
                     cache_dir=str(tmp_path_factory.mktemp("actor-cache")))


@pytest.fixture(scope="module")
def service(cluster, cfg):
    t0 = time.time()
    start_service(cfg, NAME, num_cpus=1)
    print(f"actor up with models loaded in {time.time() - t0:.1f}s")
    yield NAME
    stop_service(NAME)


def test_get_client_finds_actor_and_batches_concurrent_callers(service, cfg):
    client = get_client(cfg, service_name=service)
    assert isinstance(client, ActorClient)
    before = client.stats()["service"]
    barrier = threading.Barrier(8)
    results: dict[int, np.ndarray] = {}

    def caller(k: int) -> None:
        c = get_client(cfg, service_name=service)
        barrier.wait()
        results[k] = c.embed([f"actor caller {k} item {i}" for i in range(4)])

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    after = client.stats()["service"]
    assert sorted(results) == list(range(8))
    assert all(r.shape == (4, 384) for r in results.values())
    n_batches = after["batches"] - before["batches"]
    assert after["max_batch_seen"] == 32 and n_batches == 1, after  # all callers, one pass
    assert after["model_loads"] == {"minilm": 1, "smollm2": 1}  # loaded once, by the driver


def test_errors_come_back_as_one_line_errors(service, cfg):
    client = get_client(cfg, service_name=service)
    with pytest.raises(LLMRequestError, match="adapter 'ghost' is not loaded"):
        client.score(["x"], [" Yes"], adapter="ghost")
    with pytest.raises(LLMRequestError, match="empty"):
        client.generate([])


def test_killed_actor_restarts_and_the_call_is_retried(service, cfg):
    client = get_client(cfg, service_name=service)
    prompts = [f"Write a short review of movie number {i}:" for i in range(8)]
    expected = client.generate(prompts, max_tokens=40)
    pid = client.pid()
    jobs_before = client.stats()["service"]["batched_jobs"]
    box: dict[str, object] = {}

    def call() -> None:
        try:
            box["out"] = client.generate(prompts, max_tokens=40)
        except Exception as err:  # noqa: BLE001 - reported below
            box["err"] = err

    t = threading.Thread(target=call)
    t0 = time.time()
    t.start()
    while client.stats()["service"]["batched_jobs"] == jobs_before:  # wait: in flight
        assert time.time() - t0 < 60
        time.sleep(0.05)
    assert t.is_alive()
    os.kill(pid, signal.SIGKILL)
    t_kill = time.time()
    t.join(240)
    assert "err" not in box, box.get("err")
    assert box["out"] == expected
    assert client.pid() != pid
    st = client.stats()
    assert st["service"]["restarted"] is True
    assert st["service"]["model_loads"] == {"minilm": 1, "smollm2": 1}
    print(f"killed after {t_kill - t0:.1f}s in flight; answered {time.time() - t_kill:.1f}s "
          f"after the kill; client-side retries {st['retries']}")


def test_fallback_to_in_process_without_actor(cluster, cfg):
    client = get_client(cfg, service_name="recsec-llm-no-such-sweep")
    assert not isinstance(client, ActorClient)
