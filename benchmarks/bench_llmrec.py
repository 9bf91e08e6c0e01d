"""The LLM recommender's split training against a plain full-model LoRA pass, its cache, a trial.

1. Throughput, on the same ML-100K training examples (``LLMRec.examples``, default settings):
   - plain: LoRA on every layer, a full forward and backward per step (the reference);
   - split: LoRA on the top ``llmrec_top_layers`` layers over the lower layers' states, which
     the shared service computes once per prompt (``hidden``) and caches, the last layer run at
     the readout tokens only. Timed warm (states cached: the per-epoch cost every later epoch
     and trial pays) and cold (the one-off lower pass included).
   ``train_speedup_vs_plain_lora`` = split warm examples/s ÷ plain examples/s, measured in
   this run; ``cold_epoch_speedup`` counts the lower pass into one split epoch.
2. Two BadRec trials through ``recsec run`` with a fresh cache, each in its own child process
   (wall time, peak RSS from ``os.wait4``): a 2 % poisoned share, then 1 % (same seed, so the
   same lists): ``hidden_cache_hit_rate`` is the second trial's hit rate on the service.

    RECSEC_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_llmrec.py \
        [--examples 48] [--skip-trials] [--threads 2]

Last line: one JSON object (train_speedup_vs_plain_lora, trial_wall_s, trial_peak_rss_mb,
hidden_cache_hit_rate, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def throughput(n: int, threads: int, cache_dir: str) -> dict[str, float]:
    import numpy as np
    import torch
    from torch.nn import functional as F

    from recsec_ray.config import JobConfig, LLMConfig
    from recsec_ray.data import load_dataset
    from recsec_ray.llm import get_client
    from recsec_ray.llm.lora_head import LoraReader
    from recsec_ray.models.llmrec import LORA_TARGETS, LLMRec

    torch.set_num_threads(threads)
    cfg = JobConfig().replace(**{"model.backbone": "llmrec", "llm.cache_dir": cache_dir})
    data = load_dataset(cfg.data, progress=False)
    rec = LLMRec(cfg, n_real=data.n_users, llm=get_client(LLMConfig(cache_dir=cache_dir)))
    ex = rec.examples(data, np.ones(data.n_users), np.zeros(0, dtype=np.int64))
    ex = [ex[i] for i in np.random.default_rng(0).permutation(len(ex))[:n]]
    rows = [(h, c) for _, h, c, _ in ex]
    gold = np.array([g for *_, g in ex])
    m = cfg.model

    def loss(s, y):
        return F.cross_entropy(s, y, reduction="none")

    def epoch(reader: LoraReader, inputs) -> float:
        start = time.perf_counter()
        reader.train(inputs, gold, loss, rng=np.random.default_rng(0), epochs=1)
        return time.perf_counter() - start

    plain = LoraReader(cfg.llm.model, seed=0, purpose="bench", r=m.llmrec_lora_r,
                       target_modules=LORA_TARGETS, batch_size=m.llmrec_batch)
    plain_inputs = plain.encode(*rec.prompts(data.titles, rows))
    plain_s = epoch(plain, plain_inputs)
    del plain
    start = time.perf_counter()
    split_inputs = rec.inputs(data.titles, rows)  # cold: the service computes the lower part
    lower_s = time.perf_counter() - start
    split_s = epoch(rec.reader, split_inputs)
    tokens = sum(len(x.ids) for x in split_inputs)
    return {"examples": n, "mean_prompt_tokens": tokens / n,
            "plain_examples_per_s": n / plain_s, "split_examples_per_s": n / split_s,
            "lower_s": lower_s, "lower_tokens_per_s": tokens / lower_s,
            "train_speedup_vs_plain_lora": plain_s / split_s,
            "cold_epoch_speedup": plain_s / (split_s + lower_s)}


def trial(fraction: float, cache: str, threads: int) -> dict[str, float]:
    """One ``recsec run`` BadRec trial in a child process: its metrics, wall and peak RSS."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = out.name
    cmd = [str(Path(sys.executable).parent / "recsec"), "run", "--dataset", "ml-100k",
           "--backbone", "llmrec", "--attack", "badrec", "--trigger-level", "char",
           "--set", f"attack.badrec_fraction={fraction}", "--defense", "none", "--seed", "0",
           "--json", path]
    env = {**os.environ, "RECSEC_CACHE_DIR": cache, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"trial {fraction} failed (exit {os.waitstatus_to_exitcode(status)})")
    metrics = json.loads(Path(path).read_text())
    os.unlink(path)
    return {**metrics, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=48, help="examples timed per scheme")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-trials", action="store_true", help="throughput only (minutes)")
    args = p.parse_args()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-llmrec-") as tmp:
        out.update(throughput(args.examples, args.threads, str(Path(tmp) / "llm")))
        print(f"throughput: plain {out['plain_examples_per_s']:.2f} ex/s, split "
              f"{out['split_examples_per_s']:.2f} ex/s (x{out['train_speedup_vs_plain_lora']:.1f})"
              f"; lower pass {out['lower_tokens_per_s']:.0f} tokens/s", flush=True)
        if not args.skip_trials:
            cache = str(Path(tmp) / "trials")
            first = trial(0.02, cache, args.threads)
            second = trial(0.01, cache, args.threads)
            for name, t in (("first", first), ("second", second)):
                print(f"trial {name}: {t['wall_s']:.0f} s, peak RSS {t['peak_rss_mb']:.0f} MB, "
                      f"hr@1 {t['hr@1']:.3f}, asr@1 {t['asr@1']:.3f}, cache hit rate "
                      f"{t['llm_cache_hit_rate']:.3f}", flush=True)
            out.update(trial_wall_s=first["wall_s"], trial_peak_rss_mb=first["peak_rss_mb"],
                       trial_train_examples=first["llmrec_train_examples"],
                       second_trial_wall_s=second["wall_s"],
                       hidden_cache_hit_rate=second["llm_cache_hit_rate"],
                       **{f"trial_{k}": first[k] for k in ("hr@1", "pop_hr@1", "asr@1",
                                                           "asr_base@1", "valid_ratio")})
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
