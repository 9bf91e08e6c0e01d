"""How well a sweep keeps its CPUs busy, and what it costs in memory.

Runs the default grid of ``sweeps/poison_rate.py`` (ML-100K, SASRec, Bandwagon at 1/5/10 % x
{none, lorec, lorec_control} x seeds 0-2: 27 trials, the full job with MLflow logging and the
shared LLM service) on a local Ray with ``--cpus`` CPUs, one per trial, and reports

- sweep efficiency = sum of the trials' busy time / (sweep wall time x CPUs); the gap is Ray
  and Tune's start (~10-15 s before the first trial), the gaps between trials, and cores left
  idle while the last trials finish (the grid starts longest-expected trials first to keep
  that tail short: ``recsec_ray.sweep.grid.points``);
- peak_rss_mb: peak of the summed resident memory of the driver and every Ray process it
  started (GCS, raylet, workers, the MLflow writer, the LLM actor), sampled every 0.2 s;
- trial_peak_rss_mb: the largest peak RSS of one trial's worker process.

    RECSEC_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_sweep.py [--cpus 2] \
        [--mlflow-uri sqlite:///mlflow.db]
    .venv/bin/python benchmarks/bench_sweep.py --grid synthetic   # 8 short synthetic trials

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import tempfile
import threading
import time
from pathlib import Path

import psutil

from recsec_ray.sweep import SweepSpec, run_sweep

RECIPE = Path(__file__).resolve().parent.parent / "sweeps" / "poison_rate.py"


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


def recipe_grid() -> tuple[dict, dict]:
    """The default grid and fixed values of ``sweeps/poison_rate.py`` (read, not copied)."""
    spec = importlib.util.spec_from_file_location("poison_rate", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GRID, module.FIXED


def synthetic_grid(trials: int, epochs: int) -> tuple[dict, dict]:
    rates = [round(0.02 * (i + 1), 2) for i in range(max(1, trials // 2))]
    return ({"attack.poison_rate": rates, "defense.name": ["none"], "seed": [0, 1]},
            {"data.name": "synthetic", "data.synthetic_users": 300, "data.synthetic_items": 200,
             "model.backbone": "sasrec", "model.dim": 32, "model.epochs": epochs,
             "model.patience": epochs, "attack.name": "bandwagon"})


def machine() -> str:
    model = next((ln.split(":", 1)[1].strip() for ln in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor() or "unknown CPU")
    return (f"{model}, {psutil.cpu_count(logical=True)} logical CPUs, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", choices=("default", "synthetic"), default="default",
                   help="default: sweeps/poison_rate.py's grid; synthetic: 8 short trials")
    p.add_argument("--trials", type=int, default=8, help="synthetic grid: even number")
    p.add_argument("--epochs", type=int, default=60, help="synthetic grid")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--mlflow-uri", help="keep the trials' runs there (default: a temporary "
                   "store, deleted), so the timed sweep is also the sweep's recorded result")
    args = p.parse_args()
    grid, fixed = recipe_grid() if args.grid == "default" else \
        synthetic_grid(args.trials, args.epochs)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        spec = SweepSpec(
            name="bench_sweep", grid=grid, fixed=fixed,
            cpus_per_trial=1.0, num_cpus=args.cpus, storage_path=f"{tmp}/tune",
            mlflow_uri=args.mlflow_uri or f"sqlite:///{tmp}/mlflow.db", verbose=1)
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
    by_defense: dict[str, list[float]] = {}
    for r in result.rows:
        by_defense.setdefault(str(r.get("defense.name")), []).append(r["trial_busy_s"])
    for name, times in sorted(by_defense.items()):
        print(f"  {name}: {len(times)} trials, {min(times):.0f}-{max(times):.0f} s each")
    print(f"machine: {machine()}; grid {args.grid}, wall {result.wall_s / 60:.1f} min")
    print(json.dumps({"sweep_efficiency": round(efficiency, 4), "peak_rss_mb": round(peak, 1),
                      "trial_peak_rss_mb": round(trial_peak, 1), "n_trials": len(result.rows),
                      "cpus": args.cpus, "wall_s": round(result.wall_s, 2),
                      "busy_s": round(busy, 2), "startup_s": round(startup, 2),
                      "tail_s": round(tail, 2), "grid": args.grid, "machine": machine()}))


if __name__ == "__main__":
    main()
