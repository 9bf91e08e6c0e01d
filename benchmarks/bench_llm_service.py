"""Does the shared LLM service batch concurrent callers well? (issue 4)

For each backend a named Ray actor serves, per workload, the same prompts three ways:
  sequential  one prompt per call, one call at a time (what the reference code did);
  service     8 concurrent callers, each sending its N prompts (the sweep's traffic);
  offline     the backend's own batch call over all prompts, inside the actor (the ceiling).
Workloads: ``embed`` (item titles, MiniLM), ``score`` (P-Scanner Yes/No, SmolLM2) and
``generate`` (16 new tokens, SmolLM2); the result cache is bypassed for all three. Then a
sweep-sized batch of LLM4Dec-prompt embeddings is sent twice with the cache on: the second
pass's hit rate. Titles are synthetic (no dataset needed).

Last line: one JSON object; the headline ratios are the worst over backends and workloads.
``offline_vs_sequential`` is the ceiling batching can reach on this hardware: on a CPU a
forward pass over one short prompt already keeps the cores busy (compute-bound), so no
service can beat the backend's own batch call by more than that.
  .venv/bin/python benchmarks/bench_llm_service.py [--backends transformers,vllm] [--n 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time

PARAMS = {"embed": {}, "score": {"choices": [" Yes", " No"]},
          "generate": {"max_tokens": 16, "temperature": 0.0, "seed": 0}}
MODELS = {"embed": "minilm", "score": "smollm2", "generate": "smollm2"}


def titles(n: int, salt: str) -> list[str]:
    words = ["Night", "River", "Love", "Storm", "City", "Dream", "Ghost", "Summer", "War", "Road"]
    return [f"The {words[i % 10]} of {words[(i * 7 + 3) % 10]} {salt}{i} ({1950 + i % 60})"
            for i in range(n)]


def prompts_for(workload: str, n: int, salt: str) -> list[str]:
    from recsec_ray.llm import prompts as P

    ts = titles(n, salt)
    if workload == "embed":
        return ts
    if workload == "score":
        return [P.pscanner_prompt(t) for t in ts]
    return [f"Write a one-line review of the movie {P.quote(t)}:" for t in ts]


def _call(handle, workload: str, texts: list[str], use_cache: bool = False):
    import ray

    params = dict(PARAMS[workload], use_cache=use_cache)
    return ray.get(handle.call.remote(workload, texts, MODELS[workload], None, params))


def bench_workload(handle, workload: str, callers: int, n: int, n_seq: int, salt: str) -> dict:
    import ray

    everything = prompts_for(workload, callers * n, salt)
    _call(handle, workload, everything[:2])  # warm: model loaded, first-call costs paid
    t0 = time.perf_counter()
    for p in everything[:n_seq]:
        _call(handle, workload, [p])
    seq = n_seq / (time.perf_counter() - t0)

    before = ray.get(handle.stats.remote())
    barrier = threading.Barrier(callers)

    def caller(k: int) -> None:
        barrier.wait()
        _call(handle, workload, everything[k * n:(k + 1) * n])

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    served_s = time.perf_counter() - t0
    after = ray.get(handle.stats.remote())
    service = len(everything) / served_s
    offline_s = ray.get(handle.offline.remote(workload, everything, MODELS[workload],
                                              PARAMS[workload]))
    offline = len(everything) / offline_s
    tokens = after["tokens"] - before["tokens"]
    return {"prompts": len(everything), "sequential_prompts_per_s": round(seq, 2),
            "service_prompts_per_s": round(service, 2),
            "service_tokens_per_s": round(tokens / served_s, 1),
            "offline_prompts_per_s": round(offline, 2),
            "speedup_vs_sequential": round(service / seq, 2),
            "fraction_of_offline": round(service / offline, 3),
            "offline_vs_sequential": round(offline / seq, 2),
            "max_batch_seen": after["max_batch_seen"]}


def bench_cache(handle, n_users: int) -> dict:
    """A sweep-sized batch of LLM4Dec prompts embedded twice: the second pass is cached."""
    import ray

    from recsec_ray.llm import prompts as P

    ts = titles(n_users + 20, "c")
    batch = [P.llm4dec_prompt(ts[u:u + 20]) for u in range(n_users)]
    s0 = ray.get(handle.stats.remote())
    t0 = time.perf_counter()
    _call(handle, "embed", batch, use_cache=True)
    first_s = time.perf_counter() - t0
    s1 = ray.get(handle.stats.remote())
    t0 = time.perf_counter()
    _call(handle, "embed", batch, use_cache=True)
    second_s = time.perf_counter() - t0
    s2 = ray.get(handle.stats.remote())
    hits = (s2["cache_hits"] + s2["dedup_hits"]) - (s1["cache_hits"] + s1["dedup_hits"])
    return {"prompts": n_users, "first_pass_s": round(first_s, 2),
            "second_pass_s": round(second_s, 3),
            "first_pass_hits": s1["cache_hits"] - s0["cache_hits"],
            "cache_hit_rate": round(hits / n_users, 4)}


def bench_backend(backend: str, args, cache_dir: str) -> dict:
    from recsec_ray.config import LLMConfig
    from recsec_ray.llm import start_service, stop_service

    cfg = LLMConfig(backend=backend, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                    cache_dir=cache_dir)
    name = f"recsec-llm-bench-{backend}"
    t0 = time.perf_counter()
    handle = start_service(cfg, name, num_cpus=args.cpus, preload=True)
    out: dict = {"service_start_s": round(time.perf_counter() - t0, 1), "workloads": {}}
    try:
        for w in args.workloads.split(","):
            n = args.n_generate if w == "generate" else args.n
            res = bench_workload(handle, w, args.callers, n, min(args.n_seq, args.callers * n),
                                 salt=backend[0])
            out["workloads"][w] = res
            print(f"[{backend}] {w}: {json.dumps(res)}", flush=True)
        out["cache"] = bench_cache(handle, args.cache_users)
        print(f"[{backend}] cache: {json.dumps(out['cache'])}", flush=True)
        import ray

        out["model_loads"] = ray.get(handle.stats.remote())["model_loads"]
    finally:
        stop_service(name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="transformers,vllm")
    ap.add_argument("--workloads", default="embed,score,generate")
    ap.add_argument("--callers", type=int, default=8)
    ap.add_argument("--n", type=int, default=16, help="prompts per caller (embed, score)")
    ap.add_argument("--n-generate", type=int, default=4, help="prompts per caller (generate)")
    ap.add_argument("--n-seq", type=int, default=24, help="prompts sent one at a time")
    ap.add_argument("--cache-users", type=int, default=200)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--cpus", type=float, default=1)
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=max(4, int(args.cpus) + 2), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-llm-cache-") as cache_dir:
        for backend in args.backends.split(","):
            results[backend] = bench_backend(backend, args, cache_dir)
    ray.shutdown()
    ratios = [(w["speedup_vs_sequential"], w["fraction_of_offline"], w["offline_vs_sequential"])
              for r in results.values() for w in r["workloads"].values()]
    print(json.dumps({
        "speedup_vs_sequential": min(r[0] for r in ratios),
        "fraction_of_offline": min(r[1] for r in ratios),
        "offline_vs_sequential": min(r[2] for r in ratios),
        "cache_hit_rate": min(r["cache"]["cache_hit_rate"] for r in results.values()),
        "callers": args.callers, "backends": results}))


if __name__ == "__main__":
    main()
