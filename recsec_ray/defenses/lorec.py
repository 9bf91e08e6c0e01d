"""LoRec: an LLM-enhanced calibrator (LCT) that reweights users while the victim trains.

Follows the published reference (DESIGN §9). Each epoch the frozen backbone's view of every
user, per position ``[item vector; hidden state]``, goes through a small Transformer with a CLS
token to give ``p_u``, the chance the user is a fraudster. The LCT learns from the defender's
simulated known-attack fake users (label 1) against every dataset user (label 0, injected ones
included: the defender cannot tell them apart), with an entropy term that lets unlabelled users
become confident, and an alignment term pulling its CLS output towards an MLP of the LLM's
embedding of the user's LLM4Dec prompt. Users the LCT keeps scoring above the mean lose raw
weight; their loss weight is ``sigmoid(w) / sigmoid(w0)`` (snapped to 1 in (0.5, 1)).

Schedules (``defense.lorec_schedule``): ``reference`` follows DESIGN §9 literally (weights from
epoch 30, updates every 5 then 10 epochs; meant with ``model.lr=1e-4``, 300 epochs and
``model.select_after=149`` for every arm of a comparison). ``fast``, the default, is the same
shape scaled to the default training, which converges in ~20 epochs instead of ~200: an update
after every epoch, weights from epoch 3, so flagged users are down-weighted for most of
training. ``lorec_control`` runs the same hook with
raw weights starting at 100 (loss weights stay 1): beside ``lorec`` it separates the effect
of reweighting from that of the schedule.

Departures from the reference, each for a stated reason:
- users are shuffled (seeded) before being cut into LCT batches: the reference slices them in
  index order, so all injected users (last indices) share one batch;
- padded positions are excluded with an attention key-padding mask (the reference only zeroes
  them, so they still take part in attention);
- prompts use the ``max_titles`` most recent training titles (DESIGN §5 budget);

Cost, not maths (``tests/test_exact_shortcuts.py`` checks each against the plain form): the
LCT layers are written out over ``nn.TransformerEncoderLayer``'s own parameters with cheaper
dropout masks, the last layer computes the CLS slot only (nothing reads the others), and the
backbone's views are stored ragged and read back as wide as each batch's longest row.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..models.hooks import Hook, HookReport
from ..models.layers import dropout
from .base import DefenseContext, Sanitation
from .common import pu_loss
from .llm4dec import embed_users
from .simulate import simulated_fakes

# ---- the reweighting schedule (pure functions, unit-tested against hand-computed values) -------

def is_update_epoch(epoch: int, every: int = 5, switch: int = 30,
                    schedule: str = "reference") -> bool:
    """Whether raw weights update after (1-based) ``epoch``. ``reference``: every 5 epochs up
    to epoch 30, every 10 after (the reference's ``weight_update`` and its doubling after
    epoch 30). ``fast``: after every epoch, the same ~10 updates per convergence time scaled
    to a backbone that converges in ~20 epochs instead of ~200."""
    if schedule == "fast":
        return True
    if epoch <= switch:
        return epoch % every == 0
    return epoch % (2 * every) == 0


def update_raw_weights(raw: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, bool]:
    """One reweighting step. ``U+ = {p > mean(p)}``; only if ``|U+| < |U|/3``, users in U+ lose
    1 and the others share the loss equally (gain ``|U+| / (|U| - |U+|)`` each), so the total
    raw weight is conserved. Returns ``(new_raw, applied)``."""
    up = scores > scores.mean()
    n_up, n = int(up.sum()), len(scores)
    if not n_up < n / 3:
        return raw, False
    out = raw.astype(np.float64).copy()
    out[up] -= 1.0
    out[~up] += n_up / (n - n_up)
    return out, True


def loss_weights(raw: np.ndarray, init: float = 3.0) -> np.ndarray:
    """``sigmoid(w) / sigmoid(init)``, set to 1 where it lies strictly between 0.5 and 1: users
    must lose several updates in a row before their loss shrinks at all."""
    sig = 1.0 / (1.0 + np.exp(-np.asarray(raw, dtype=np.float64)))
    w = sig / (1.0 / (1.0 + math.exp(-init)))
    w[(w > 0.5) & (w < 1.0)] = 1.0
    return w


# ---- the calibrator ---------------------------------------------------------------------------

def sinusoidal(length: int, dim: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


class LCT(nn.Module):
    """CLS + sinusoidal positions + 2 Transformer blocks over ``(B, L, 2d)`` inputs; the head is
    Linear(2d→128)+BN+Dropout+GELU+Linear(128→1)+BN; ``llm_proj`` maps an LLM embedding to 2d
    for the alignment term (the reference's MLP_Layers with one hidden layer)."""

    def __init__(self, in_dim: int, llm_dim: int, max_len: int, *, heads: int = 2,
                 ffn: int = 128, blocks: int = 2, dropout: float = 0.1):
        super().__init__()
        if in_dim % heads:
            heads = 1  # odd 2d cannot be split; one head keeps the maths the same
        self.cls = nn.Parameter(torch.empty(1, 1, in_dim))
        nn.init.xavier_normal_(self.cls)
        self.register_buffer("pos", sinusoidal(max_len, in_dim), persistent=False)
        layer = nn.TransformerEncoderLayer(in_dim, heads, ffn, dropout, activation="gelu",
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(in_dim, 128), nn.BatchNorm1d(128),
                                  nn.Dropout(dropout), nn.GELU(), nn.Linear(128, 1),
                                  nn.BatchNorm1d(1))
        self.llm_proj = nn.Sequential(nn.Linear(llm_dim, in_dim), nn.GELU(), nn.Dropout(dropout),
                                      nn.Linear(in_dim, in_dim), nn.GELU())

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, 2d), pad (B, L) True at padding -> (p (B,), cls output (B, 2d))."""
        x = (x + self.pos[-x.shape[1]:]) * (~pad)[..., None]
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        keep_cls = torch.zeros(pad.shape[0], 1, dtype=torch.bool, device=pad.device)
        bias = torch.zeros(x.shape[0], 1, 1, x.shape[1], dtype=x.dtype, device=x.device)
        bias.masked_fill_(torch.cat([keep_cls, pad], dim=1)[:, None, None, :], float("-inf"))
        layers = self.encoder.layers
        for i, layer in enumerate(layers):
            x = _encoder_layer(layer, x, bias, cls_only=i == len(layers) - 1)
        z = x[:, 0]
        return torch.sigmoid(self.head(z)).squeeze(-1), z


def _encoder_layer(layer: nn.TransformerEncoderLayer, x: torch.Tensor, bias: torch.Tensor,
                   cls_only: bool = False) -> torch.Tensor:
    """``layer(x, src_key_padding_mask=...)`` written out (post-LN, GELU; the same parameters
    and maths, checked against the module in a test), with ``layers.dropout``'s cheap masks
    instead of ``bernoulli_`` (six dropouts per layer: a fifth of the calibrator's time).

    ``cls_only``: only the CLS slot's output (B, 1, D). In the last layer nothing reads the
    other slots (the head and the alignment see the CLS output alone), so their queries,
    attention rows, projections and FFN, a third of the calibrator's arithmetic, are skipped;
    keys and values still come from every slot, so the CLS output is the same."""
    attn, train = layer.self_attn, layer.training
    B, L, D = x.shape
    heads = attn.num_heads
    hd = D // heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    if cls_only:
        q = F.linear(x[:, :1], w[:D], b[:D])
        k, v = F.linear(x, w[D:], b[D:]).split(D, dim=-1)
        x = x[:, :1]
    else:
        q, k, v = F.linear(x, w, b).split(D, dim=-1)
    Lq = q.shape[1]
    q = q.view(B, Lq, heads, hd).transpose(1, 2)
    k, v = (t.view(B, L, heads, hd).transpose(1, 2) for t in (k, v))
    if train and attn.dropout > 0:
        att = torch.matmul(q, k.transpose(-2, -1)).mul_(hd ** -0.5).add_(bias).softmax(-1)
        y = dropout(att, attn.dropout, True) @ v
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    y = attn.out_proj(y.transpose(1, 2).reshape(B, Lq, D))
    x = layer.norm1(x + dropout(y, layer.dropout1.p, train))
    y = layer.linear2(dropout(F.gelu(layer.linear1(x)), layer.dropout.p, train))
    return layer.norm2(x + dropout(y, layer.dropout2.p, train))


def lct_loss(p: torch.Tensor, y: torch.Tensor, z: torch.Tensor, llm_view: torch.Tensor,
             lam_entropy: float, lam_align: float) -> torch.Tensor:
    """The PU loss (BCE + λ1·entropy on label-0 rows, ``common.pu_loss``) − λ2·mean
    cosine(z, view): the alignment pulls the CLS output towards the LLM's view of the user."""
    return (pu_loss(p, y, lam_entropy)
            - lam_align * F.cosine_similarity(z, llm_view, dim=1).mean())


# ---- the train hook ---------------------------------------------------------------------------
VIEW_BATCH = 512  # sequences per no-grad backbone forward when the epoch's views are computed

class LoRecHook(Hook):
    """Trains the LCT alongside the victim and hands the trainer per-user loss weights.

    The trainer calls ``on_epoch_start(e)`` before (0-based) epoch ``e``; the LCT passes and
    the weight update of the reference's epoch ``e`` (1-based: the one just finished) run
    here, so epoch ``e``'s weights already reflect them. ``report()`` hands back the latest
    p_u of every dataset user (the detection scores) and the update counts.
    """

    def __init__(self, ctx: DefenseContext, sim_seqs: list[np.ndarray], user_emb: np.ndarray,
                 sim_emb: np.ndarray):
        self.ctx, self.cfg = ctx, ctx.cfg
        self.train_seqs = [s[:-2] for s in ctx.data.seqs]
        self.sim_train = [s[:-2] for s in sim_seqs]
        self.user_emb, self.sim_emb = user_emb, sim_emb
        self.scores = np.zeros(ctx.data.n_users, dtype=np.float64)
        self.stats: dict[str, Any] = {"lorec_updates": 0, "lorec_skipped_updates": 0}
        self.raw = np.full(ctx.data.n_users, self.cfg.lorec_init_weight, dtype=np.float64)
        # 0-based: the first epoch trained with the reweighted loss (see ``_epoch``)
        self.start = self.cfg.lorec_start
        self.selection_start_epoch = max(self.start - 1, 0)
        # two LCT passes an epoch, as the reference (one is cheaper, but on 120 synthetic
        # users in 8 epochs it lowers no user's weight: tests/test_defenses.py)
        self.passes = 2
        self.retry = False  # reference: a skipped update is retried after the next epoch
        self.lct: LCT | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.rng = ctx.rng(0x10D)
        self.views: Views | None = None  # built at the first pass, for the backbone's window

    # ---- trainer API ----
    def on_epoch_start(self, epoch: int, model: Any, weights: np.ndarray) -> np.ndarray:
        # the LCT draws its own randomness (dropout) inside a forked RNG, so the victim's
        # training stream is the same with and without the defense
        devices = [next(model.parameters()).device] \
            if next(model.parameters()).is_cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(self.rng.integers(2**31 - 1)))
            return self._epoch(epoch, model, weights)

    def _epoch(self, epoch: int, model: Any, weights: np.ndarray) -> np.ndarray:
        if epoch >= 1:
            loss, self.scores[:] = self._train_lct(model)
            done = epoch  # the 1-based number of the epoch that just finished
            updated = False
            if self.retry or is_update_epoch(done, schedule=self.cfg.lorec_schedule):
                self.raw, updated = update_raw_weights(self.raw, self.scores)
                self.retry = not updated
                self.stats["lorec_updates"] = self.stats.get("lorec_updates", 0) + int(updated)
                self.stats["lorec_skipped_updates"] = (self.stats.get("lorec_skipped_updates", 0)
                                                       + int(not updated))
            self.stats["lorec_lct_loss"] = loss
            self.stats["lorec_min_weight"] = float(
                loss_weights(self.raw, self.cfg.lorec_init_weight).min())
        # the reference weights the loss from (1-based) epoch lct_start on
        if epoch + 1 >= self.start:
            return (weights * loss_weights(self.raw, self.cfg.lorec_init_weight)
                    ).astype(np.float32)
        return weights

    def report(self) -> HookReport:
        return HookReport(user_scores=self.scores.copy(), stats=dict(self.stats))

    # ---- internals ----
    def _max_len(self, model: Any) -> int:
        """The backbone's input length when it has one (positional tables), else the longest
        training part."""
        own = getattr(model, "max_len", None)
        return int(own) if own else max(1, max(len(s) for s in self.train_seqs + self.sim_train))

    def _ensure_lct(self, model: Any, device: torch.device) -> LCT:
        if self.views is None:
            self.views = Views(self.sim_train + self.train_seqs, self._max_len(model))
        if self.lct is None:
            d = int(model.item_vectors().shape[1])
            self.lct = LCT(2 * d, self.user_emb.shape[1], self.views.max_len).to(device)
            self.opt = torch.optim.AdamW(self.lct.parameters(), lr=0.01, weight_decay=5e-4,
                                         fused=True)
        return self.lct

    def _train_lct(self, model: Any) -> tuple[float, np.ndarray]:
        """The epoch's LCT passes, then every dataset user's p_u from the trained LCT."""
        device = next(model.parameters()).device
        lct = self._ensure_lct(model, device)
        assert self.views is not None
        n_users, n_sim = len(self.train_seqs), len(self.sim_train)
        self.views.refresh(model)  # rows: simulated fakes first, then dataset users
        user_emb = torch.tensor(self.user_emb, device=device)  # copies: the cache's arrays
        sim_emb = torch.tensor(self.sim_emb, device=device)  # are read-only
        lct.train()
        total, steps, batch = 0.0, 0, self.ctx.model_cfg.batch_size
        for _ in range(self.passes):
            users = self.rng.permutation(n_users)
            sims = self.rng.permutation(n_sim)
            # the backbone's batch size: batches of 512 (4 LCT steps an epoch) left the LCT
            # untrained on ML-100K (user AUC 0.44 against 0.97 at 64)
            n_batches = -(-max(n_users, n_sim) // batch)
            for u_idx, s_idx in zip(np.array_split(users, n_batches),
                                    np.array_split(sims, n_batches), strict=True):
                if len(u_idx) + len(s_idx) < 2:
                    continue  # BatchNorm needs two rows
                emb = torch.cat([sim_emb[torch.as_tensor(s_idx, device=device)],
                                 user_emb[torch.as_tensor(u_idx, device=device)]])
                y = torch.cat([torch.ones(len(s_idx)), torch.zeros(len(u_idx))]).to(device)
                p, z = lct(*self.views.batch(np.concatenate([s_idx, n_sim + u_idx])))
                loss = lct_loss(p, y, z, lct.llm_proj(emb), self.cfg.lorec_lambda_entropy,
                                self.cfg.lorec_lambda_align)
                assert self.opt is not None
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                total, steps = total + loss.item(), steps + 1
        lct.eval()
        scores = np.zeros(n_users, dtype=np.float64)
        with torch.no_grad():
            for rows in self.views.by_length(n_sim + np.arange(n_users)):
                scores[rows - n_sim] = lct(*self.views.batch(rows))[0].cpu().numpy()
        return total / max(steps, 1), scores


class Views:
    """The frozen backbone's view of each sequence, per position ``[item vector; hidden
    state]``: computed once per epoch (``refresh``) for every user and simulated fake, then
    read by the LCT's batches (its passes and the scoring see the same backbone, unchanged
    within the epoch).

    Stored ragged, real positions only, and without the item half (gathered from the item
    table per batch): a padded (users, 50, 2d) float array is 30 MB on ML-100K but 1.5 GB on
    50,000 users of ~10 items. The forward runs over length-sorted batches, each as wide as
    its longest sequence, and a batch read back is as wide as its longest row.
    """

    def __init__(self, seqs: list[np.ndarray], max_len: int):
        self.max_len = max_len
        tails = [np.asarray(s[-max_len:], dtype=np.int64) for s in seqs]
        self.lengths = np.array([len(t) for t in tails], dtype=np.int64)
        # slot 0 of the flat arrays is padding: item 0, a zero state
        self.offsets = 1 + np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.ids = torch.from_numpy(np.concatenate([np.zeros(1, np.int64), *tails]))
        self.hidden: torch.Tensor | None = None
        self.vectors: torch.Tensor | None = None

    def by_length(self, rows: np.ndarray) -> list[np.ndarray]:
        rows = rows[np.argsort(self.lengths[rows], kind="stable")]
        return [rows[i:i + VIEW_BATCH] for i in range(0, len(rows), VIEW_BATCH)]

    def _slots(self, rows: np.ndarray) -> tuple[torch.Tensor, int]:
        """(B, W) indices into the flat arrays, left-padded with 0; W = the longest row."""
        n = self.lengths[rows]
        width = max(1, int(n.max()))
        col = np.arange(width)[None, :] - (width - n)[:, None]  # position within the row
        flat = np.where(col >= 0, self.offsets[rows][:, None] + col, 0)
        return torch.from_numpy(flat), width

    def refresh(self, model: Any) -> None:
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        with torch.no_grad():
            self.vectors = model.item_vectors().float()
            self.ids = self.ids.to(device)
            hidden = torch.zeros(len(self.ids), self.vectors.shape[1], device=device)
            for rows in self.by_length(np.arange(len(self.lengths))):
                slots, _ = self._slots(rows)
                slots = slots.to(device)
                real = (slots > 0).reshape(-1).nonzero(as_tuple=True)[0]
                h = model.hidden(self.ids[slots]).float().reshape(-1, hidden.shape[1])
                hidden.index_copy_(0, slots.reshape(-1)[real], h[real])
        model.train(was_training)
        self.hidden = hidden

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows' views (B, W, 2d) and padding mask (B, W)."""
        assert self.hidden is not None and self.vectors is not None
        slots, _ = self._slots(np.asarray(rows))
        slots = slots.to(self.hidden.device)
        x = torch.cat([F.embedding(self.ids[slots], self.vectors), self.hidden[slots]], dim=-1)
        return x, slots == 0


def lorec_control(ctx: DefenseContext) -> Sanitation:
    """LoRec's machinery with its effect removed: the same simulated users, LLM views, LCT,
    schedule and model selection, but raw weights start at 100, so σ(w)/σ(100) stays 1 after
    any plausible number of updates. Beside ``lorec`` it separates what reweighting does
    from what the schedule (later selection, longer training) does."""
    return lorec(replace(ctx, cfg=replace(ctx.cfg, lorec_init_weight=CONTROL_INIT_WEIGHT)))


CONTROL_INIT_WEIGHT = 100.0


def lorec(ctx: DefenseContext) -> Sanitation:
    """Prepare LoRec: simulated fakes and LLM views now; the calibration runs during training."""
    sim, _ = simulated_fakes(ctx)
    titles = ctx.data.titles
    user_emb = embed_users(ctx, [s[:-2] for s in ctx.data.seqs], titles)
    sim_emb = embed_users(ctx, [s[:-2] for s in sim], titles)
    san = Sanitation.keep_all(ctx.data)
    san.user_threshold = 0.5 if ctx.cfg.threshold is None else ctx.cfg.threshold
    san.stats = {"n_simulated": len(sim), "embed_dim": int(user_emb.shape[1])}
    san.hook = LoRecHook(ctx, sim, user_emb, sim_emb)  # scores come back through its report
    return san
