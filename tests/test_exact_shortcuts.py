"""Every shortcut the speed work took computes what the plain form computes: the fused
full-softmax loss, last-slot scoring, trimmed padding, the cheap dropout masks, length-grouped
batches, LoRec's hand-written calibrator layers and ragged views."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsec_ray.config import ModelConfig
from recsec_ray.data import pad_left, synthetic
from recsec_ray.defenses.lorec import LCT, Views
from recsec_ray.models import build_model, fused_ce, trainer
from recsec_ray.models.fused_ce import weighted_ce
from recsec_ray.models.layers import dropout

SMALL = ModelConfig(dim=16, layers=2, heads=2, dropout=0.1)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("rows_per_chunk", [5, 4096])
def test_fused_ce_matches_cross_entropy_and_its_gradients(monkeypatch, rows_per_chunk):
    monkeypatch.setattr(fused_ce, "chunk_rows", lambda n_items: rows_per_chunk)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(6, 7, 8, dtype=torch.float64, generator=g, requires_grad=True)
    table = torch.randn(41, 8, dtype=torch.float64, generator=g)
    table[0] = 0
    table.requires_grad_()
    supervised = torch.rand(6, 7, generator=g) < 0.6
    target = torch.randint(1, 41, (6, 7), generator=g)
    coef = torch.rand(int(supervised.sum()), dtype=torch.float64, generator=g)
    flat = supervised.reshape(-1).nonzero(as_tuple=True)[0]
    fused = weighted_ce(h, table, flat, target.reshape(-1)[flat], coef)
    (2.5 * fused).backward()  # a hook may scale the loss: backward scales the gradient
    got = h.grad.clone(), table.grad.clone()
    h.grad = table.grad = None
    plain = (F.cross_entropy(h[supervised] @ table[1:].T, target[supervised] - 1,
                             reduction="none") * coef).sum()
    (2.5 * plain).backward()
    torch.testing.assert_close(fused, plain)
    torch.testing.assert_close(got[0], h.grad)
    torch.testing.assert_close(got[1], table.grad)
    assert not got[1][0].any()  # the padding row is never a class


def test_fused_ce_keeps_a_loss_beyond_float_range_exact():
    h = torch.tensor([[200.0, 0.0]], requires_grad=True)  # the target scores e^-200 below
    table = torch.tensor([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    loss = weighted_ce(h, table, torch.tensor([0]), torch.tensor([1]), torch.ones(1))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(400.0)


def test_fused_ce_under_no_grad_only_scores():
    h, table = torch.randn(3, 4, requires_grad=True), torch.randn(6, 4)
    with torch.no_grad():
        loss = weighted_ce(h, table, torch.arange(3), torch.tensor([1, 2, 5]), torch.ones(3))
    assert not loss.requires_grad


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec", "bert4rec"])
def test_last_slot_and_trimmed_padding_score_as_the_full_window(backbone):
    model = build_model(dataclasses.replace(SMALL, backbone=backbone), 30, 12).eval()
    rows = [np.arange(1, 7), np.array([4, 9, 2]), np.arange(3, 11)]
    full = torch.as_tensor(pad_left(rows, 12))
    trimmed = torch.as_tensor(pad_left(rows, 8))  # as wide as the longest row
    with torch.no_grad():
        ref = model.item_vectors()
        if backbone == "bert4rec":  # the probe's state: [MASK] after the history
            probe = torch.cat([full[:, 1:], torch.full((3, 1), model.mask_id)], 1)
            expect = model._hidden(probe, ref)[:, -1]
        else:
            expect = model.hidden(full)[:, -1]
        torch.testing.assert_close(model.user_vectors(full), expect)
        torch.testing.assert_close(model.user_vectors(trimmed), expect)
        torch.testing.assert_close(model.scores(trimmed), model.scores(full))


def test_dropout_is_seeded_keeps_the_rate_and_scales():
    x = torch.ones(200_000)
    torch.manual_seed(3)
    a = dropout(x, 0.2, True)
    torch.manual_seed(3)
    b = dropout(x, 0.2, True)
    assert torch.equal(a, b)
    kept = a > 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005
    assert torch.allclose(a[kept], torch.tensor(1 / (1 - round(0.2 * 32768) / 32768)))
    assert dropout(x, 0.2, False) is x and dropout(x, 0.0, True) is x
    y = torch.randn(1000, requires_grad=True)
    dropout(y, 0.5, True).sum().backward()
    assert set(y.grad.unique().tolist()) == {0.0, 2.0}  # p = 0.5 is exact in 15 bits


def test_length_grouped_batches_cover_every_user_once_in_as_many_batches():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 52, size=1000)
    order = rng.permutation(1000)
    batches = trainer._batches(order, lengths, 64, np.random.default_rng(1))
    assert len(batches) == -(-1000 // 64)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert sorted(len(b) for b in batches)[1:] == [64] * (len(batches) - 1)
    # grouped: a batch pads far less than a random one
    pad = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)
    plain = sum(64 * lengths[order[i:i + 64]].max() - lengths[order[i:i + 64]].sum()
                for i in range(0, 1000, 64))
    assert pad < plain / 2


def test_lct_layers_match_torch_transformer_encoder():
    torch.manual_seed(0)
    lct = LCT(32, 8, 10).eval()
    x = torch.randn(5, 10, 32)
    pad = torch.zeros(5, 10, dtype=torch.bool)
    pad[1, :4] = True
    pad[3, :9] = True
    _, z = lct(x, pad)
    keep = torch.cat([torch.zeros(5, 1, dtype=torch.bool), pad], 1)
    inp = torch.cat([lct.cls.expand(5, -1, -1), (x + lct.pos) * (~pad)[..., None]], 1)
    with torch.no_grad():
        ref = lct.encoder(inp, src_key_padding_mask=keep)[:, 0]
    torch.testing.assert_close(z, ref, atol=1e-5, rtol=1e-5)


def test_ragged_views_equal_the_padded_views():
    data = synthetic(40, 30, seed=1, max_len=10)
    model = build_model(dataclasses.replace(SMALL, layers=1), data.n_items, 10).eval()
    seqs = [s[:-2] for s in data.seqs]
    views = Views(seqs, 10)
    views.refresh(model)
    rows = np.array([3, 7, 1, 19, 0])
    x, pad = views.batch(rows)
    ids = torch.as_tensor(pad_left([seqs[r] for r in rows], 10))
    with torch.no_grad():
        full = torch.cat([F.embedding(ids, model.item_vectors()), model.hidden(ids)], -1)
    width = x.shape[1]
    assert width == max(min(len(seqs[r]), 10) for r in rows)
    assert torch.equal(pad, ids[:, -width:] == 0)
    torch.testing.assert_close(x[~pad], full[:, -width:][~pad])
