"""Scale: one undefended and one LoRec SASRec job on (a) the partial MovieLens-1M and (b) a
synthetic catalogue of 50,000 users x 20,000 items x ~500,000 interactions.

(a) is ``ml-1m`` from ``$RECSEC_DATA_DIR``: the copy there has the ratings of users 1-2999
only (a real but partial ML-1M, ~49 % of its ratings; see that folder's README). (b) is
``recsec_ray.data.synthetic_interactions`` written as a custom dataset (Parquet), so it goes
through the same reader, k-core and cache as a user's own data; generated, never downloaded.
Both: Bandwagon at 5 %, the default ``ModelConfig`` (early stopping), every core. ML-1M keeps
the defaults throughout. The synthetic catalogue trains with two of the reference's own
settings (DESIGN §9) instead: the one-negative BCE (``model.loss=bce``), since a full softmax
over 20,000 items is ~2.7 TFLOP of matrix products an epoch (~20 s at this CPU's 2-core peak,
so a 30-epoch run could not fit 10 minutes whatever the code; ``--synthetic-loss ce`` runs it
anyway), and batches of 512 users (``model.batch_size``): with ~10 items a user a batch of 64
is ~600 positions, and each step's AdamW update and dense gradient of the 20,000-row item
table cost more than its positions (64: ~40 s an epoch here, under load), with the
learning rate scaled by the square root of the batch ratio (2e-3 x sqrt(8), the usual rule
for Adam; at 2e-3 validation NDCG@10 was still climbing after 28 epochs). Each job runs in a fresh child process; its peak RSS comes from ``os.wait4``, its wall
time from the parent's clock (Python start-up, imports, data loading and the LLM's prompt
embeddings included); s/epoch is the job's training stage over its epochs (validation
included), eval time its full-ranking evaluation of every real user.

    RECSEC_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_scale.py \
        [--only ml1m|synthetic] [--skip-lorec]

The LLM prompt embeddings LoRec needs (MiniLM) are cached content-addressed; a cold cache adds
their one-time cost to the LoRec job's wall time (printed as ``embed`` beside it).
Last line: one JSON object (ml1m_wall_s, synthetic_wall_s, synthetic_eval_s,
synthetic_peak_rss_mb, lorec_over_none, ...).
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
SYNTH = {"users": 50_000, "items": 20_000, "interactions": 500_000, "seed": 0}
COMMON = {"model.backbone": "sasrec", "attack.name": "bandwagon", "attack.poison_rate": 0.05,
          "seed": 0}


def write_synthetic(folder: Path) -> dict[str, str]:
    """The synthetic catalogue as the custom dataset's interactions + titles Parquet files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsec_ray.data.synth import synthetic_interactions

    table, titles = synthetic_interactions(SYNTH["users"], SYNTH["items"],
                                           SYNTH["interactions"], SYNTH["seed"])
    folder.mkdir(parents=True, exist_ok=True)
    inter, names = folder / "interactions.parquet", folder / "titles.parquet"
    pq.write_table(pa.table(table), inter)
    pq.write_table(pa.table({"item": list(range(1, len(titles) + 1)), "title": titles}), names)
    return {"data.name": "custom", "data.interactions": str(inter), "data.titles": str(names)}


def worker(spec: str, out: str) -> None:
    """One job in this (fresh) process: its metrics and per-epoch times to ``out``."""
    from recsec_ray import job
    from recsec_ray.config import JobConfig
    from recsec_ray.data import load_dataset

    cfg = JobConfig().replace(**json.loads(spec))
    data = load_dataset(cfg.data)
    epochs: list[float] = []

    def on_epoch(row: dict) -> None:
        epochs.append(row["time_s"])
        print(f"  epoch {row['epoch']}: {row['time_s']:.2f} s, valid ndcg@10 "
              f"{row['valid_ndcg@10']:.4f}", file=sys.stderr, flush=True)

    metrics = job.run(cfg, progress=False, on_epoch=on_epoch)
    Path(out).write_text(json.dumps({"metrics": metrics, "epoch_s": epochs,
                                     "users": data.n_users, "items": data.n_items,
                                     "interactions": int(sum(len(s) for s in data.seqs))}))


def child_env() -> dict[str, str]:
    """OpenMP threads that sleep at a barrier instead of spinning (unless the caller chose):
    with another process on the machine, two spinning threads wait out each other's time
    slices, and two-thread training ran 10-20x slower here (27 s against 2.4 s an ML-100K
    epoch while another job ran); on an idle machine it changes little."""
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def run_job(name: str, overrides: dict, work: Path) -> dict:
    out = work / f"{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(overrides),
           "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=child_env())
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench_scale: job {name} failed (exit {os.waitstatus_to_exitcode(status)})")
    res = json.loads(out.read_text())
    m = res["metrics"]
    row = {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024.0,
           "s_per_epoch": m["time_train_s"] / max(m["epochs_trained"], 1),
           "epochs": int(m["epochs_trained"]), "eval_s": m["time_eval_s"],
           "defense_s": m.get("time_defense_s", 0.0), "hr@10": m["hr@10"],
           "t_hr@50": m["t_hr@50"], "user_auc": m.get("user_auc"),
           "users": res["users"], "items": res["items"], "interactions": res["interactions"]}
    print(f"[{name}] {row['users']} users, {row['items']} items, {row['interactions']} "
          f"interactions (fakes included): wall {wall:.1f} s, {row['epochs']} epochs at "
          f"{row['s_per_epoch']:.2f} s, eval {row['eval_s']:.2f} s, defense stage "
          f"{row['defense_s']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MiB, hr@10 "
          f"{row['hr@10']:.4f}, t_hr@50 {row['t_hr@50']:.4f}"
          + (f", user AUC {row['user_auc']:.3f}" if row["user_auc"] is not None else ""),
          flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("ml1m", "synthetic"))
    p.add_argument("--skip-lorec", action="store_true", help="undefended jobs only")
    p.add_argument("--synthetic-loss", choices=("bce", "ce"), default="bce")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.out)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        work = Path(tmp)
        datasets = {}
        if args.only in (None, "ml1m"):
            datasets["ml1m"] = {"data.name": "ml-1m"}
        if args.only in (None, "synthetic"):
            datasets["synthetic"] = {**write_synthetic(work / "synthetic"),
                                     "model.loss": args.synthetic_loss,
                                     "model.batch_size": 512,
                                     "model.lr": round(2e-3 * 8 ** 0.5, 6)}
        for ds, data in datasets.items():
            for defense in ("none",) if args.skip_lorec else ("none", "lorec"):
                rows[f"{ds}_{defense}"] = run_job(f"{ds}_{defense}",
                                                  {**COMMON, **data, "defense.name": defense},
                                                  work)
    out: dict[str, float | None] = {}
    for ds in ("ml1m", "synthetic"):
        none, lorec = rows.get(f"{ds}_none"), rows.get(f"{ds}_lorec")
        if none:
            out.update({f"{ds}_wall_s": round(none["wall_s"], 1),
                        f"{ds}_s_per_epoch": round(none["s_per_epoch"], 3),
                        f"{ds}_eval_s": round(none["eval_s"], 2),
                        f"{ds}_peak_rss_mb": round(none["peak_rss_mb"], 1),
                        f"{ds}_epochs": none["epochs"]})
        if none and lorec:
            out[f"{ds}_lorec_wall_s"] = round(lorec["wall_s"], 1)
            out[f"{ds}_lorec_peak_rss_mb"] = round(lorec["peak_rss_mb"], 1)
            out[f"{ds}_lorec_over_none"] = round(lorec["wall_s"] / none["wall_s"], 3)
    out["lorec_over_none"] = out.get("synthetic_lorec_over_none", out.get("ml1m_lorec_over_none"))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
