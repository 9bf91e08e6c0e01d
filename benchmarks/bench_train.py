"""Time to quality: our SASRec vs RecBole 1.2.1's SASRec on ML-100K, same data and split.

RecBole trains for a fixed epoch budget and its best test HR@10 over those epochs is the bar;
ours trains (normal validation-based early stopping) and the clock stops for it at the first
epoch whose test HR@10 reaches the bar. Both sides:

- read the same ordered sequences: RecBole's atomic ``.inter`` file is written from our
  preprocessed data with synthetic, strictly increasing per-user timestamps, so its ``TO``
  order and ``LS valid_and_test`` split give exactly our leave-one-out (train ``seq[:-2]``,
  valid ``seq[-2]``, test ``seq[-1]``), input window 50;
- use the same dims (our ``ModelConfig`` defaults: 64-d, 2 blocks, 2 heads, FFN 4x, GELU,
  dropout 0.2) and full-softmax CE loss; batch size and learning rate stay each side's own
  defaults (RecBole trains on every prefix, ~38k samples per epoch; we train one window per
  user);
- are scored with the same metric on every epoch's test items: full ranking over all items,
  history masked, ties by smaller index (``recsec_ray.metrics``; ``masked_hr_ndcg`` here for
  RecBole's scores). RecBole's own sequential evaluation does not mask history, so its native
  figures (printed too) are lower and would make an easier bar;
- count wall time from the start of training to the end of the epoch that reaches the
  quality, including each side's own per-epoch validation and excluding the extra per-epoch
  test evaluation that only this benchmark does;
- run in their own child process with the same torch thread count (peak RSS of each child
  from ``os.wait4``). RecBole needs numpy<2, so it runs from ``.venv-bench``
  (``scripts/bench_env.sh``); ours from the project's ``.venv``.

    scripts/bench_env.sh   # once
    RECSEC_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_train.py \
        [--recbole-epochs 10] [--threads 2] [--seed 0]

Also the floor: the matrix-product FLOPs of one of our epochs (``sasrec_epoch_flops``, counted
on real positions, validation included) over the GFLOP/s of a 2048^3 product measured in our
worker, same threads, just before and after training; ``s_per_epoch`` is our training wall
time (validation included) per epoch.

Last line: one JSON object (s_per_epoch, floor_s_per_epoch, speedup_vs_recbole, hr@10,
recbole_hr@10, peak_rss_mb, recbole_peak_rss_mb, ...). Only the standard library is imported at module level: the same
file is the RecBole worker in the bench environment and our worker in the project's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
DATASET = "recsec-ml-100k"
K = 10


# ---- pure helpers (unit-tested in tests/test_bench_train.py) ---------------------------------
def write_atomic_inter(seqs, path: str | Path) -> int:
    """Write RecBole's atomic ``.inter`` file for ``seqs`` (our item indices, oldest first).

    User token = our user index, item token = our item index, timestamp = position in the
    user's sequence: strictly increasing per user, so RecBole's time ordering reproduces our
    order exactly (it would break real-timestamp ties its own way, DESIGN §10). Written to a
    temporary name and renamed, so a reader never sees half a file. Returns the row count.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    rows = 0
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, seq in enumerate(seqs):
            f.writelines(f"{u}\t{int(item)}\t{t}\n" for t, item in enumerate(seq))
            rows += len(seq)
    os.replace(tmp, path)
    return rows


def recbole_config(model_cfg: dict, data_path: str, *, epochs: int, seed: int,
                   max_len: int, checkpoint_dir: str) -> dict:
    """RecBole config dict matching our model config (``dataclasses.asdict(ModelConfig())``)."""
    return {
        "data_path": data_path, "checkpoint_dir": checkpoint_dir,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "user_inter_num_interval": None, "item_inter_num_interval": None,  # already filtered
        "MAX_ITEM_LIST_LENGTH": max_len,
        "hidden_size": model_cfg["dim"], "inner_size": 4 * model_cfg["dim"],
        "n_layers": model_cfg["layers"], "n_heads": model_cfg["heads"],
        "hidden_dropout_prob": model_cfg["dropout"], "attn_dropout_prob": model_cfg["dropout"],
        "hidden_act": "gelu", "loss_type": "CE", "train_neg_sample_args": None,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                      "mode": "full"},
        "metrics": ["Hit", "NDCG"], "topk": [K], "valid_metric": f"NDCG@{K}",
        "epochs": epochs, "stopping_step": epochs + 1, "seed": seed, "reproducibility": True,
        "use_gpu": False, "show_progress": False, "state": "WARNING", "worker": 0,
    }


def masked_hr_ndcg(scores, histories, targets, k: int = K):
    """Per-row HR@k and NDCG@k as ``recsec_ray.metrics`` computes them, for any score matrix.

    Column 0 is padding (never ranked); each row's history is masked except its target (a
    repeat stays rankable); rank = 1 + #higher + #equal with a smaller column index.
    """
    import numpy as np

    s = np.array(scores, dtype=np.float64)
    tgt = np.asarray(targets, dtype=np.int64)
    rows = np.arange(len(s))
    keep = s[rows, tgt].copy()
    for i, hist in enumerate(histories):
        s[i, np.asarray(hist, dtype=np.int64)] = -np.inf
    s[rows, tgt] = keep
    s[:, 0] = -np.inf
    t = s[rows, tgt][:, None]
    col = np.arange(s.shape[1])[None, :]
    rank = 1 + ((s > t) | ((s == t) & (col < tgt[:, None]))).sum(1)
    hit = rank <= k
    return hit.astype(np.float64), np.where(hit, 1.0 / np.log2(rank + 1.0), 0.0)


def self_maxrss_mb() -> float:
    """This process's peak RSS so far (MiB): before the benchmark's own test evaluation."""
    import resource

    return maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def first_reaching(curve: list[dict], bar: float, key: str = "test_hr@10") -> dict | None:
    """First epoch entry of ``curve`` whose ``key`` is at least ``bar`` (None if never)."""
    return next((e for e in curve if e[key] >= bar - 1e-12), None)


def sasrec_epoch_flops(lengths, n_items: int, dim: int, layers: int,
                       max_len: int = 50) -> dict[str, float]:
    """Matrix-multiply FLOPs of one of our SASRec epochs, counted from the model's shapes on
    real (non-padding) positions only: the arithmetic the model cannot do without.

    ``lengths``: each trained user's training-part length. Training sees the last
    ``max_len + 1`` items of each: ``n`` = min(len, max_len + 1) - 1 input positions, all
    supervised. Per position and block: q/k/v, output and 4x FFN projections (12 d^2 multiply-
    adds, 24 d^2 FLOPs), causal attention over the ``t`` positions up to it (2 x 2 d t); the
    full-softmax output layer 2 d n_items. Backward is twice the forward. Validation (one forward per user
    over its ``min(len, max_len)`` training items): every block for every position but the
    last block's queries, output and FFN only for the last one, then one score row.
    """
    import numpy as np

    d = dim
    lengths = np.asarray(lengths, dtype=np.float64)
    n = np.maximum(np.minimum(lengths, max_len + 1) - 1, 0)
    per_block = 24 * d * d * n + 4 * d * n * (n + 1) / 2  # projections + causal attention
    train = 3 * (layers * per_block + 2 * d * n_items * n)
    v = np.minimum(lengths, max_len)
    last = 4 * d * d * v + 20 * d * d + 4 * d * v  # keys/values for all, the rest for one
    valid = (layers - 1) * (24 * d * d * v + 4 * d * v * (v + 1) / 2) + last + 2 * d * n_items
    return {"train": float(train.sum()), "valid": float(valid.sum())}


def matmul_gflops(threads: int, size: int = 2048, reps: int = 5) -> float:
    """Best of ``reps`` fp32 ``size``^3 matrix products on ``threads`` torch threads: what
    this CPU's multiply units give a well-shaped product right now."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def maxrss_mb(ru_maxrss_kib: int) -> float:
    """Linux ``ru_maxrss`` (KiB) in MiB."""
    return ru_maxrss_kib / 1024.0


def run_child(cmd: list[str], env: dict, cwd: str) -> tuple[int, float]:
    """Run ``cmd``; return (exit status, the child's peak RSS in MiB) from ``os.wait4``."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, maxrss_mb(usage.ru_maxrss)


# ---- RecBole worker (runs in .venv-bench) ------------------------------------------------------
def recbole_worker(args) -> None:
    import warnings

    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole's own checkpoints
    sys.argv = sys.argv[:1]  # RecBole's Config would read our flags as its own
    warnings.filterwarnings("ignore", category=FutureWarning)  # pandas/amp deprecations
    warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
    import numpy as np
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    # importing RecBole's SINE turns anomaly detection on globally (~2.5x slower, DESIGN §10)
    torch.autograd.set_detect_anomaly(False)
    torch.set_num_threads(args.threads)
    spec = json.loads(Path(args.spec).read_text())
    config = Config(model="SASRec", dataset=DATASET, config_dict=spec["config"])
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)

    # full history per RecBole user id (its input window holds only the last 50 items)
    inter = np.loadtxt(Path(config["data_path"]) / f"{DATASET}.inter", dtype=str, skiprows=1)
    users = dataset.token2id("user_id", inter[:, 0])
    items = dataset.token2id("item_id", inter[:, 1])
    history: dict[int, np.ndarray] = {}
    for u in np.unique(users):
        history[int(u)] = items[users == u][:-1]

    def masked_test() -> tuple[float, float]:
        model.eval()
        hr = ndcg = 0.0
        n = 0
        with torch.no_grad():
            for batch in test_data:
                interaction = batch[0].to(config["device"])
                scores = model.full_sort_predict(interaction).view(len(interaction), -1)
                uids = interaction["user_id"].cpu().numpy()
                h, g = masked_hr_ndcg(scores.float().cpu().numpy(),
                                      [history[int(u)] for u in uids],
                                      interaction["item_id"].cpu().numpy())
                hr, ndcg, n = hr + h.sum(), ndcg + g.sum(), n + len(uids)
        return hr / n, ndcg / n

    curve: list[dict] = []
    clock = {"start": 0.0, "excluded": 0.0}

    def on_epoch(epoch: int, valid_score: float) -> None:
        now = time.perf_counter()
        elapsed = now - clock["start"] - clock["excluded"]
        rss = self_maxrss_mb()
        native = trainer.evaluate(test_data, load_best_model=False)
        hr, ndcg = masked_test()
        curve.append({"epoch": epoch, "time_s": elapsed, "rss_mb": rss,
                      "valid_ndcg@10": float(valid_score),
                      "test_hr@10": hr, "test_ndcg@10": ndcg,
                      "native_hr@10": float(native[f"hit@{K}"]),
                      "native_ndcg@10": float(native[f"ndcg@{K}"])})
        print(f"[recbole] epoch {epoch}: {elapsed:.1f} s, valid ndcg@10 {valid_score:.4f}, "
              f"test hr@10 {hr:.4f} (native {curve[-1]['native_hr@10']:.4f}), peak RSS so far "
              f"{rss:.0f} MiB", flush=True)
        clock["excluded"] += time.perf_counter() - now

    clock["start"] = time.perf_counter()
    trainer.fit(train_data, valid_data, verbose=False, saved=True, callback_fn=on_epoch)
    total = time.perf_counter() - clock["start"] - clock["excluded"]
    native = trainer.evaluate(test_data, load_best_model=True)  # valid-selected model
    hr, ndcg = masked_test()
    result = {"curve": curve, "budget_time_s": total, "final_hr@10": hr,
              "final_ndcg@10": ndcg, "final_native_hr@10": float(native[f"hit@{K}"]),
              "final_native_ndcg@10": float(native[f"ndcg@{K}"]),
              "train_samples": len(train_data.dataset)}
    Path(args.result).write_text(json.dumps(result))


# ---- our worker (runs in .venv) ----------------------------------------------------------------
def ours_worker(args) -> None:
    import dataclasses

    import numpy as np
    import torch

    from recsec_ray.config import DataConfig, EvalConfig, ModelConfig
    from recsec_ray.data import load_dataset
    from recsec_ray.metrics import ranking_metrics
    from recsec_ray.models import build_model
    from recsec_ray.models.trainer import train

    gflops = matmul_gflops(args.threads)
    torch.set_num_threads(args.threads)
    model_cfg = ModelConfig(backbone="sasrec", device="cpu")
    if args.our_max_epochs:
        model_cfg = dataclasses.replace(model_cfg, epochs=args.our_max_epochs)
    data_cfg = DataConfig()
    data = load_dataset(data_cfg)
    eval_cfg = EvalConfig(ks=(K,), target_ks=())
    no_targets = np.zeros(0, dtype=np.int64)
    model = build_model(model_cfg, data.n_items, data_cfg.max_len, seed=args.seed)
    curve: list[dict] = []
    clock = {"start": 0.0, "excluded": 0.0}

    def on_epoch(entry: dict) -> None:
        now = time.perf_counter()
        elapsed = now - clock["start"] - clock["excluded"]
        rss = self_maxrss_mb()
        m = ranking_metrics(model, data, data.n_users, no_targets, eval_cfg, "test")
        curve.append({"epoch": entry["epoch"], "time_s": elapsed, "rss_mb": rss,
                      "valid_ndcg@10": entry["valid_ndcg@10"], "test_hr@10": m[f"hr@{K}"],
                      "test_ndcg@10": m[f"ndcg@{K}"]})
        print(f"[ours] epoch {entry['epoch']}: {elapsed:.1f} s, valid ndcg@10 "
              f"{entry['valid_ndcg@10']:.4f}, test hr@10 {m[f'hr@{K}']:.4f}, peak RSS so far "
              f"{rss:.0f} MiB", flush=True)
        clock["excluded"] += time.perf_counter() - now

    clock["start"] = time.perf_counter()
    result = train(model, data, model_cfg, n_real=data.n_users, seed=args.seed, progress=False,
                   device="cpu", on_epoch=on_epoch)
    total = time.perf_counter() - clock["start"] - clock["excluded"]
    final = ranking_metrics(result.model, data, data.n_users, no_targets, eval_cfg, "test")
    flops = sasrec_epoch_flops([len(data.train_seq(u)) for u in range(data.n_users)],
                               data.n_items, model_cfg.dim, model_cfg.layers, data_cfg.max_len)
    gflops = max(gflops, matmul_gflops(args.threads))  # before and after: the better one
    Path(args.result).write_text(json.dumps({
        "curve": curve, "total_time_s": total, "best_epoch": result.best_epoch,
        "final_hr@10": final[f"hr@{K}"], "final_ndcg@10": final[f"ndcg@{K}"],
        "train_s": sum(h["time_s"] for h in result.history), "epochs": len(result.history),
        "epoch_gflop": (flops["train"] + flops["valid"]) / 1e9, "matmul_gflops": gflops}))


# ---- driver -----------------------------------------------------------------------------------
def _child_env(threads: int) -> dict:
    """Both sides alike: the thread count, and OpenMP threads that sleep at a barrier instead
    of spinning (unless the caller chose): with another process on a 2-core machine two
    spinning threads wait out each other's time slices, and a two-thread epoch of either side
    ran 10-20x slower."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
                "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONPATH": str(ROOT)})
    return env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recbole-epochs", type=int, default=10, help="RecBole's epoch budget")
    p.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--our-max-epochs", type=int, default=None,
                   help="cap on our epochs (default: ModelConfig.epochs; early stopping rules)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (atomic file, logs)")
    p.add_argument("--worker", choices=("recbole", "ours"), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker == "recbole":
        return recbole_worker(args)
    if args.worker == "ours":
        return ours_worker(args)
    if args.recbole_epochs < 1 or args.threads < 1:
        sys.exit("bench_train: --recbole-epochs and --threads must be >= 1")
    if not BENCH_PYTHON.exists():
        sys.exit(f"bench_train: {BENCH_PYTHON} missing; run scripts/bench_env.sh first")

    import dataclasses

    from recsec_ray.config import DataConfig, ModelConfig
    from recsec_ray.data import load_dataset

    data_cfg = DataConfig()
    data = load_dataset(data_cfg)
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        rows = write_atomic_inter(data.seqs, work / "data" / DATASET / f"{DATASET}.inter")
        print(f"data: {data.n_users} users, {data.n_items} items, {rows} interactions; "
              f"threads {args.threads}, RecBole budget {args.recbole_epochs} epochs", flush=True)
        spec = {"config": recbole_config(dataclasses.asdict(ModelConfig()),
                                         str(work / "data"), epochs=args.recbole_epochs,
                                         seed=args.seed, max_len=data_cfg.max_len,
                                         checkpoint_dir=str(work / "saved"))}
        (work / "spec.json").write_text(json.dumps(spec))
        env = _child_env(args.threads)
        me = str(Path(__file__).resolve())
        common = ["--threads", str(args.threads), "--seed", str(args.seed)]
        if args.our_max_epochs:
            common += ["--our-max-epochs", str(args.our_max_epochs)]
        rc, rb_rss = run_child([str(BENCH_PYTHON), me, "--worker", "recbole", "--spec",
                                str(work / "spec.json"), "--result", str(work / "rb.json"),
                                *common], env, str(work))
        if rc != 0:
            sys.exit(f"bench_train: the RecBole worker failed (exit {rc})")
        rb = json.loads((work / "rb.json").read_text())
        rc, our_rss = run_child([sys.executable, me, "--worker", "ours", "--result",
                                 str(work / "ours.json"), *common], env, str(ROOT))
        if rc != 0:
            sys.exit(f"bench_train: our worker failed (exit {rc})")
        ours = json.loads((work / "ours.json").read_text())
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(args, rb, rb_rss, ours, our_rss)


def report(args, rb: dict, rb_rss: float, ours: dict, our_rss: float) -> None:
    best = max(rb["curve"], key=lambda e: e["test_hr@10"])
    bar = best["test_hr@10"]
    hit = first_reaching(ours["curve"], bar)
    our_time = hit["time_s"] if hit else math.nan
    speedup = best["time_s"] / our_time if hit else None
    print(f"RecBole SASRec: best test HR@10 {bar:.4f} (NDCG@10 {best['test_ndcg@10']:.4f}; "
          f"RecBole's unmasked metric {best['native_hr@10']:.4f}) at epoch {best['epoch']}, "
          f"reached after {best['time_s']:.1f} s; budget of {args.recbole_epochs} epochs "
          f"{rb['budget_time_s']:.1f} s ({rb['train_samples']} training samples/epoch); "
          f"valid-selected test HR@10 {rb['final_hr@10']:.4f} NDCG@10 "
          f"{rb['final_ndcg@10']:.4f}; peak RSS {rb_rss:.0f} MiB")
    if hit:
        print(f"ours SASRec: reached the bar at epoch {hit['epoch']} after {our_time:.1f} s "
              f"(test HR@10 {hit['test_hr@10']:.4f})", end="; ")
    else:
        print("ours SASRec: NEVER reached the bar", end="; ")
    print(f"trained {len(ours['curve'])} epochs in {ours['total_time_s']:.1f} s, "
          f"valid-selected epoch {ours['best_epoch']}: test HR@10 {ours['final_hr@10']:.4f} "
          f"NDCG@10 {ours['final_ndcg@10']:.4f}; peak RSS {our_rss:.0f} MiB")
    print(f"time to RecBole's best test HR@10: RecBole {best['time_s']:.1f} s / ours "
          f"{our_time:.1f} s = {speedup if speedup is None else round(speedup, 2)}x")
    s_epoch = ours["total_time_s"] / max(ours["epochs"], 1)
    floor = ours["epoch_gflop"] / ours["matmul_gflops"]
    rb_epoch = rb["budget_time_s"] / args.recbole_epochs
    print(f"ours {s_epoch:.3f} s/epoch (validation included; {ours['epoch_gflop']:.1f} GFLOP of "
          f"matrix products an epoch); floor at the {ours['matmul_gflops']:.0f} GFLOP/s a "
          f"2048^3 product reached in the same process: {floor:.3f} s/epoch, ours "
          f"{s_epoch / floor:.2f}x it; RecBole {rb_epoch:.1f} s/epoch")
    print(json.dumps({
        "s_per_epoch": round(s_epoch, 4), "floor_s_per_epoch": round(floor, 4),
        "floor_ratio": round(s_epoch / floor, 3), "matmul_gflops": round(ours["matmul_gflops"], 1),
        "epoch_gflop": round(ours["epoch_gflop"], 2), "recbole_s_per_epoch": round(rb_epoch, 2),
        "epochs": ours["epochs"],
        "speedup_vs_recbole": None if speedup is None else round(speedup, 3),
        "hr@10": round(ours["final_hr@10"], 4), "recbole_hr@10": round(bar, 4),
        "ndcg@10": round(ours["final_ndcg@10"], 4),
        "recbole_ndcg@10": round(best["test_ndcg@10"], 4),
        "recbole_native_hr@10": round(best["native_hr@10"], 4),
        "time_to_bar_s": None if not hit else round(our_time, 2),
        "recbole_time_to_bar_s": round(best["time_s"], 2),
        "recbole_budget_time_s": round(rb["budget_time_s"], 2),
        "recbole_epochs": args.recbole_epochs, "threads": args.threads,
        "peak_rss_mb": round(our_rss, 1), "recbole_peak_rss_mb": round(rb_rss, 1)}))


if __name__ == "__main__":
    main()
