"""Metrics against a hand-computed example (ranks worked out on paper below)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsec_ray.config import EvalConfig, ModelConfig
from recsec_ray.data.sequences import SequenceData
from recsec_ray.errors import ModelOutputError
from recsec_ray.metrics import (
    asr,
    detection_metrics,
    ranking_metrics,
    ranks,
    ranks_upto,
    score_users,
)
from recsec_ray.models import build_model

NEG = float("-inf")


class LookupScores(torch.nn.Module):
    """Scores chosen by hand: the row for a batch row is looked up by its last input item."""

    def __init__(self, rows: dict[int, list[float]], max_len: int = 4):
        super().__init__()
        self.rows, self.max_len = rows, max_len
        self.register_buffer("anchor", torch.zeros(1))

    def scores(self, seqs: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.rows[int(s[-1])] for s in seqs])


def _data() -> SequenceData:
    # u0: history (test) {1,2} -> 3;  u1: {4,5} -> 6;  u2: {3,1} -> 5
    seqs = [np.array(s) for s in ([1, 2, 3], [4, 5, 6], [3, 1, 5])]
    return SequenceData("hand", seqs, [""] + [f"t{i}" for i in range(1, 7)])


# Test-time rows, keyed by the last history item (u0: 2, u1: 5, u2: 1). Columns 0..6.
TEST_ROWS = {
    2: [7, 9, 8, 3, 3, 4, 0],      # item3=3 ties item4 (larger index, behind); item5 ahead -> 2
    5: [7, 2, 2, 7, 100, 100, 2],  # item6=2: items 1,2 tie with smaller index, item3 -> rank 4
    1: [7, 50, 1, 50, 0, 6, 5],    # item5=6 highest among unmasked -> rank 1
}


def test_ranks_break_ties_by_index():
    s = torch.tensor([[0.0, 1.0, 2.0, 1.0, 1.0]])
    assert ranks(s, torch.tensor([3])).item() == 3  # item 2 higher, item 1 tied with lower index
    assert ranks(s, torch.tensor([1])).item() == 2


def test_ranks_upto_is_exact_up_to_k_and_caps_the_rest():
    s = torch.tensor([[NEG, 5.0, 3.0, 3.0, 9.0, 3.0, 1.0]])
    # ranks: item4 1, item1 2, items 2/3/5 tie -> 3, 4, 5 by index, item6 6
    items = torch.tensor([[4, 1, 2, 3, 5, 6]])
    assert ranks_upto(s, items, 7).tolist() == [[1, 2, 3, 4, 5, 6]]  # k >= columns: exact
    # k = 4: the 4th value (3.0) is tied across the cut; item 5 is 5th -> capped at 5
    assert ranks_upto(s, items, 4).tolist() == [[1, 2, 3, 4, 5, 5]]
    assert ranks_upto(s, items, 2).tolist() == [[1, 2, 3, 3, 3, 3]]
    rng = np.random.default_rng(0)
    big = torch.from_numpy(rng.integers(0, 40, size=(64, 300)).astype(np.float32))  # many ties
    big[:, 0] = NEG
    big[:5, 10:] = NEG  # rows with fewer finite scores than k
    items = torch.from_numpy(rng.integers(1, 300, size=(64, 7)))
    exact = torch.stack([ranks(big, items[:, j]) for j in range(7)], 1)
    for k in (1, 10, 50):
        assert torch.equal(ranks_upto(big, items, k), exact.clamp(max=k + 1))
        # one item a row (validation) takes the counting path
        assert torch.equal(ranks_upto(big, items[:, :1], k), exact[:, :1].clamp(max=k + 1))


def test_hand_computed_ranking_metrics():
    data = _data()
    cfg = EvalConfig(ks=(2, 4, 5), target_ks=(2, 4))  # hr@1, hr@3: the list protocol's keys
    m = ranking_metrics(LookupScores(TEST_ROWS), data, 3, np.array([4, 6]), cfg)
    # test ranks: u0 = 2, u1 = 4, u2 = 1
    assert m["hr@2"] == pytest.approx(2 / 3)
    assert m["hr@4"] == pytest.approx(1.0)
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1) / 3)
    assert m["ndcg@4"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5) + 1) / 3)
    # targets: u1 holds both 4 and 6, so only u0 and u2 count.
    # target 4: u0 rank 3 (item3 tie smaller index, item5), u2 rank 4;  target 6: u0 4, u2 2
    assert m["t_hr@2"] == pytest.approx((0.0 + 0.5) / 2)
    assert m["t_hr@4"] == pytest.approx(1.0)
    t4 = (1 / math.log2(4) + 1 / math.log2(5)) / 2
    t6 = (1 / math.log2(5) + 1 / math.log2(3)) / 2
    assert m["t_ndcg@4"] == pytest.approx((t4 + t6) / 2)
    assert m["t_ndcg@2"] == pytest.approx((0.0 + (1 / math.log2(3)) / 2) / 2)


def test_n_real_limits_users_and_targets_without_eligible_users_are_skipped():
    data, model = _data(), LookupScores(TEST_ROWS)
    m = ranking_metrics(model, data, 2, np.array([3, 4]), EvalConfig(ks=(2,), target_ks=(1, 4)))
    assert m["hr@2"] == pytest.approx(1 / 2)  # u0 rank 2 (hit), u1 rank 4 (miss); u2 not real
    # target 3: only u1 lacks it, rank 1;  target 4: only u0 lacks it, rank 3
    assert m["t_hr@1"] == pytest.approx(0.5)
    assert m["t_hr@4"] == pytest.approx(1.0)
    # n_real=1: every user (u0) holds item 2, so target 2 is skipped, not counted as a miss
    m = ranking_metrics(model, data, 1, np.array([2, 5]), EvalConfig(ks=(2,), target_ks=(1,)))
    assert m["t_hr@1"] == pytest.approx(1.0)
    m = ranking_metrics(model, data, 1, np.array([2]), EvalConfig(ks=(2,), target_ks=(1,)))
    assert math.isnan(m["t_hr@1"]) and math.isnan(m["t_ndcg@1"])


def test_masking_test_and_valid_histories():
    data = _data()
    (_, test), = list(score_users(LookupScores(TEST_ROWS), data, np.arange(3), "test"))
    assert test[0, 0] == NEG and test[0, 1] == NEG and test[0, 2] == NEG  # pad + history
    assert test[0, 3] == 3  # held-out item kept
    # valid: history seq[:-2] only; the valid item and the later test item stay rankable
    valid_rows = {1: [0, 9, 8, 7, 0, 0, 0], 4: [0] * 7, 3: [0] * 7}
    (_, valid), = list(score_users(LookupScores(valid_rows), data, np.arange(3), "valid"))
    assert valid[0, 1] == NEG and valid[0, 2] == 8 and valid[0, 3] == 7


def test_non_finite_scores_raise():
    rows = dict(TEST_ROWS)
    rows[5] = [0, 1, 2, float("nan"), 0, 0, 1]
    with pytest.raises(ModelOutputError, match="non-finite"):
        ranking_metrics(LookupScores(rows), _data(), 3, np.array([4]), EvalConfig())


def test_detection_metrics_hand_example():
    scores = np.array([0.9, 0.8, 0.3, 0.6, 0.1])
    truth = np.array([1, 0, 1, 0, 0], dtype=bool)
    m = detection_metrics(scores, truth, 0.5, "user")
    assert m["user_precision"] == pytest.approx(1 / 3)
    assert m["user_recall"] == pytest.approx(1 / 2)
    assert m["user_f1"] == pytest.approx(0.4)
    assert m["user_auc"] == pytest.approx(4 / 6)
    tied = detection_metrics(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 0]), 0.5, "item")
    assert tied["item_auc"] == pytest.approx(0.75)  # vs 0.5 tie counts half, vs 0.2 full
    one_class = detection_metrics(np.array([0.2, 0.7]), np.array([0, 0]), 0.5, "user")
    assert math.isnan(one_class["user_auc"]) and math.isnan(one_class["user_recall"])
    assert one_class["user_precision"] == 0.0
    with pytest.raises(ModelOutputError):
        detection_metrics(np.array([np.nan, 0.1]), np.array([1, 0]), 0.5, "user")


def test_asr_scores_triggered_pushed_item_against_clean_items():
    rng = np.random.default_rng(0)
    seqs = [rng.choice(np.arange(1, 21), size=6, replace=False) for _ in range(6)]
    data = SequenceData("tiny", seqs, [""] + [f"t{i}" for i in range(1, 21)])
    feats = rng.normal(size=(21, 8)).astype(np.float32)
    feats[0] = 0
    cfg = ModelConfig(backbone="sasrec", items="text", dim=8, layers=1, heads=1)
    model = build_model(cfg, 20, 6, feats).eval()
    pushed, used = [], set()  # one distinct pushed item per user, outside its history
    for s in seqs:
        pushed.append(next(i for i in range(20, 0, -1) if i not in s and i not in used))
        used.add(pushed[-1])
    pushed = np.array(pushed)
    (_, clean_scores), = list(score_users(model, data, np.arange(6)))
    # untriggered: ASR = share of users whose pushed item already ranks in the top K
    r = ranks(clean_scores, torch.from_numpy(pushed))
    untriggered = {"asr@1": (r <= 1).sum().item() / 6, "asr@5": (r <= 5).sum().item() / 6}
    assert asr(model, data, 6, pushed, feats, ks=(1, 5)) == {
        **untriggered, "asr_base@1": untriggered["asr@1"], "asr_base@5": untriggered["asr@5"]}
    # trigger = give each pushed item the title embedding of the user's clean top item: it ties
    # that item, so it ranks 1 (smaller index) or 2 (larger index); other items stay clean
    top = clean_scores.argmax(1).numpy()
    triggered = feats.copy()
    triggered[pushed] = feats[top]
    result = asr(model, data, 6, pushed, triggered, ks=(1, 2))
    assert result["asr@2"] == 1.0
    assert result["asr@1"] == pytest.approx(float(np.mean(pushed < top)))
    assert result["asr_base@2"] == (r <= 2).sum().item() / 6  # the baseline stays clean
    np.testing.assert_array_equal(model.item_features(), feats)  # clean titles restored
