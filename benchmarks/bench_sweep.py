"""How well a sweep keeps its CPUs busy, and what it costs in memory.

Runs a real sweep (the full job: synthetic data, SASRec, Bandwagon attack, MLflow logging) of
8 short trials (about 30 s each here) on a local Ray with 2 CPUs, one CPU per trial, and
reports

- sweep efficiency = sum of the trials' busy time / (sweep wall time x CPUs); the gap is Ray
  and Tune overhead, almost all of it a fixed ~10-15 s before the first trial starts (Tune's
  setup, placement groups, worker start); so longer trials score higher;
- peak_rss_mb: peak of the summed resident memory of the driver and every Ray process it
  started (GCS, raylet, workers, the MLflow writer), sampled every 0.2 s;
- trial_peak_rss_mb: the largest peak RSS of one trial's worker process.

    .venv/bin/python benchmarks/bench_sweep.py [--trials 8] [--epochs 8] [--cpus 2]

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time

import psutil

from recsec_ray.sweep import SweepSpec, run_sweep


class RssSampler(threading.Thread):
    """Peak of the summed RSS of this process and all its descendants."""

    def __init__(self, period_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.period_s, self.peak, self._stop_flag = period_s, 0, threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self._stop_flag.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.period_s)

    def stop(self) -> float:
        self._stop_flag.set()
        self.join()
        return self.peak / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8, help="even number: rates x 2 seeds")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--cpus", type=int, default=2)
    args = p.parse_args()
    rates = [round(0.02 * (i + 1), 2) for i in range(max(1, args.trials // 2))]
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        spec = SweepSpec(
            name="bench_sweep",
            grid={"attack.poison_rate": rates, "defense.name": ["none"], "seed": [0, 1]},
            fixed={"data.name": "synthetic", "data.synthetic_users": 300,
                   "data.synthetic_items": 200, "model.backbone": "sasrec", "model.dim": 32,
                   "model.epochs": args.epochs, "model.patience": args.epochs,
                   "attack.name": "bandwagon"},
            cpus_per_trial=1.0, num_cpus=args.cpus, storage_path=f"{tmp}/tune",
            mlflow_uri=f"sqlite:///{tmp}/mlflow.db", verbose=0, llm="off")
        sampler = RssSampler()
        sampler.start()
        result = run_sweep(spec)
        peak = sampler.stop()
    if result.errors:
        raise SystemExit(f"{len(result.errors)} trial(s) failed: {result.errors[0]}")
    busy = sum(r["trial_busy_s"] for r in result.rows)
    t0 = result.finished_at - result.wall_s
    startup = min(r["trial_start"] for r in result.rows) - t0
    tail = result.finished_at - max(r["trial_end"] for r in result.rows)
    efficiency = busy / (result.wall_s * args.cpus)
    trial_peak = max(r["trial_peak_rss_mb"] for r in result.rows)
    print(f"{len(result.rows)} trials on {args.cpus} CPUs: busy {busy:.1f} s in "
          f"{result.wall_s:.1f} s wall -> efficiency {efficiency:.3f}")
    print(f"overhead: {startup:.1f} s before the first trial started (MLflow writer, Tune, "
          f"worker start), {tail:.1f} s after the last ended; mean trial "
          f"{busy / len(result.rows):.1f} s")
    print(f"peak RSS of the driver + Ray processes {peak:.0f} MB; one trial's worker "
          f"{trial_peak:.0f} MB")
    print(json.dumps({"sweep_efficiency": round(efficiency, 4), "peak_rss_mb": round(peak, 1),
                      "trial_peak_rss_mb": round(trial_peak, 1), "n_trials": len(result.rows),
                      "cpus": args.cpus, "wall_s": round(result.wall_s, 2),
                      "busy_s": round(busy, 2), "startup_s": round(startup, 2),
                      "tail_s": round(tail, 2)}))


if __name__ == "__main__":
    main()
