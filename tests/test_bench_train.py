"""The benchmark's pure helpers: the atomic file RecBole reads, the metric applied to RecBole's
scores (must equal ``recsec_ray.metrics``), bar crossing, config mapping. No RecBole, no timing."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from recsec_ray.config import ModelConfig
from recsec_ray.data import synthetic
from recsec_ray.metrics import ranks

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_train.py"
_spec = importlib.util.spec_from_file_location("bench_train", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _read_inter(path: Path) -> tuple[list[str], np.ndarray]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0].split("\t"), np.array([ln.split("\t") for ln in lines[1:]], dtype=np.int64)


def test_atomic_inter_reproduces_our_sequences_in_order(tmp_path):
    data = synthetic(30, 40, seed=3)
    out = tmp_path / "d" / "x.inter"
    n = bench.write_atomic_inter(data.seqs, out)
    header, rows = _read_inter(out)
    assert header == ["user_id:token", "item_id:token", "timestamp:float"]
    assert n == len(rows) == sum(len(s) for s in data.seqs)
    assert not list(out.parent.glob("*.tmp"))
    for u, seq in enumerate(data.seqs):
        mine = rows[rows[:, 0] == u]
        ts = mine[:, 2]
        assert (np.diff(ts) > 0).all()  # strictly increasing: no ties for RecBole to break
        # RecBole sorts by time; a shuffled file must give back exactly our order
        np.testing.assert_array_equal(mine[np.argsort(ts, kind="stable"), 1], seq)


def test_atomic_inter_keeps_repeats_and_overwrites(tmp_path):
    out = tmp_path / "x.inter"
    bench.write_atomic_inter([np.array([5, 2, 5, 9])], out)
    bench.write_atomic_inter([np.array([1, 2, 3]), np.array([3, 3, 1])], out)
    _, rows = _read_inter(out)
    assert rows.tolist() == [[0, 1, 0], [0, 2, 1], [0, 3, 2], [1, 3, 0], [1, 3, 1], [1, 1, 2]]


def test_masked_hr_ndcg_by_hand():
    # 6 columns, column 0 = padding (its high score must not count)
    scores = np.array([[9.0, 0.1, 0.9, 0.8, 0.3, 0.2],
                       [9.0, 0.5, 0.5, 0.5, 0.9, 0.1]])
    # row 0: history {2, 3} masked -> target 4 ranks 1; row 1: ties, target 3 after 1 and 2
    # and behind 4 -> rank 4
    hr, ndcg = bench.masked_hr_ndcg(scores, [[2, 3], []], [4, 3], k=3)
    assert hr.tolist() == [1.0, 0.0]
    assert ndcg.tolist() == [1.0, 0.0]
    hr, ndcg = bench.masked_hr_ndcg(scores, [[2, 3], []], [4, 3], k=4)
    assert hr.tolist() == [1.0, 1.0]
    assert ndcg[1] == pytest.approx(1 / np.log2(5))


def test_masked_hr_ndcg_keeps_a_repeated_target_and_matches_our_ranks():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 30)).astype(np.float32)
    scores[:, 7] = scores[:, 8]  # some exact ties
    targets = rng.integers(1, 30, size=50)
    hists = [rng.choice(np.arange(1, 30), size=8, replace=False) for _ in range(50)]
    hists[0] = np.append(hists[0], targets[0])  # a repeat purchase stays rankable
    hr, ndcg = bench.masked_hr_ndcg(scores, hists, targets, k=5)
    masked = torch.from_numpy(scores.copy())
    for i, h in enumerate(hists):
        masked[i, torch.from_numpy(np.setdiff1d(h, [targets[i]]))] = float("-inf")
    masked[:, 0] = float("-inf")
    r = ranks(masked, torch.from_numpy(targets)).numpy()
    np.testing.assert_array_equal(hr, (r <= 5).astype(float))
    np.testing.assert_allclose(ndcg, np.where(r <= 5, 1 / np.log2(r + 1.0), 0.0))
    assert np.isfinite(ndcg).all() and hr.sum() > 0


def test_first_reaching():
    curve = [{"epoch": e, "test_hr@10": v} for e, v in enumerate([0.05, 0.12, 0.10, 0.2])]
    assert bench.first_reaching(curve, 0.1)["epoch"] == 1
    assert bench.first_reaching(curve, 0.2)["epoch"] == 3
    assert bench.first_reaching(curve, 0.21) is None


def test_recbole_config_mirrors_our_model_defaults(tmp_path):
    cfg = dataclasses.asdict(ModelConfig())
    rb = bench.recbole_config(cfg, str(tmp_path), epochs=3, seed=1, max_len=50,
                              checkpoint_dir=str(tmp_path / "saved"))
    assert (rb["hidden_size"], rb["n_layers"], rb["n_heads"]) == (cfg["dim"], cfg["layers"],
                                                                  cfg["heads"])
    assert rb["inner_size"] == 4 * cfg["dim"] and rb["hidden_act"] == "gelu"
    assert rb["hidden_dropout_prob"] == rb["attn_dropout_prob"] == cfg["dropout"]
    assert rb["loss_type"] == "CE" and rb["train_neg_sample_args"] is None
    assert rb["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert rb["eval_args"]["order"] == "TO" and rb["eval_args"]["mode"] == "full"
    assert rb["MAX_ITEM_LIST_LENGTH"] == 50 and rb["epochs"] == 3
    assert rb["stopping_step"] > rb["epochs"]  # the budget is never cut short


def test_maxrss_mb():
    assert bench.maxrss_mb(1024 * 300) == 300.0


def test_epoch_flops_match_torch_flop_counter_on_a_full_batch():
    """The floor's FLOP count is the matrix products a training step really runs, less only
    the attention scores above the diagonal (dense kernels compute them, causal SASRec
    discards them)."""
    from torch.utils.flop_counter import FlopCounterMode

    from recsec_ray.models import build_model

    d, layers, n_items, L, B = 16, 2, 30, 8, 4
    cfg = ModelConfig(dim=d, layers=layers, heads=2, dropout=0.1)
    model = build_model(cfg, n_items, L).train()
    seq = torch.randint(1, n_items + 1, (B, L + 1))
    batch = {"input": seq[:, :-1], "target": seq[:, 1:], "weights": torch.ones(B)}
    with FlopCounterMode(display=False) as counter:
        model.batch_loss(batch).backward()
    ours = bench.sasrec_epoch_flops([L + 1] * B, n_items, d, layers, max_len=L)["train"]
    upper = 3 * layers * 4 * d * (L * L - L * (L + 1) / 2) * B
    unseen = 2 * d * n_items * L * B  # the counter skips in-place addmm_ (d table += g^T h)
    assert counter.get_total_flops() + unseen == ours + upper
