"""What every sequential backbone shares: the item table, scoring, and the training loss.

A backbone only writes ``_hidden(seqs, vectors)``: per-position states of a left-padded batch
(0 = padding, most recent item last). Everything else follows from it:
``scores = user_vectors @ item_vectors.T`` with one table for input and output items.
"""

from __future__ import annotations

import abc

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .fused_ce import weighted_ce
from .items import build_items


class SeqRecommender(nn.Module, abc.ABC):
    trainable = True  # trained by gradient descent (``Pop`` counts instead)

    def __init__(self, cfg: ModelConfig, n_items: int, max_len: int,
                 item_features: np.ndarray | None = None):
        super().__init__()
        self.n_items, self.max_len, self.loss_kind = n_items, max_len, cfg.loss
        self.loss_average = cfg.loss_average
        self.items = build_items(cfg.items, n_items, cfg.dim, item_features)

    # ---- the one method a backbone writes ------------------------------------------------------
    @abc.abstractmethod
    def _hidden(self, seqs: torch.Tensor, vectors: torch.Tensor,
                last: bool = False) -> torch.Tensor:
        """(B, L) left-padded indices and the item table -> (B, L, d) states, or with
        ``last`` only the last slot's (B, d) (scoring needs no more)."""

    # ---- public API (contract) ---------------------------------------------------------------
    def item_vectors(self) -> torch.Tensor:
        """(n_items + 1, d); row 0 is padding and is zero."""
        return self.items()

    def hidden(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item indices -> (B, L, d) per-position states."""
        return self._hidden(seqs, self.item_vectors())

    def user_vectors(self, seqs: torch.Tensor) -> torch.Tensor:
        """State that scores the next item: the hidden state at the last (most recent) slot."""
        return self._hidden(seqs, self.item_vectors(), last=True)

    def scores(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, n_items + 1) scores. The table is transposed into a contiguous copy first: MKL
        multiplies by it ~30 % faster than by the strided view (``metrics.asr`` does the
        same, so a triggered item scores with the very same kernel)."""
        return self.user_vectors(seqs) @ self.item_vectors().T.contiguous()

    def _supervised(self, batch: dict[str, torch.Tensor], vectors: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """States (B, L, d), the item each slot predicts (B, L) and which slots are supervised
        (B, L): ``batch["input"][:, t]`` is followed by ``batch["target"][:, t]``; slots where
        either is padding are not. BERT4Rec replaces it (cloze)."""
        inp, target = batch["input"], batch["target"]
        return self._hidden(inp, vectors), target, (inp != 0) & (target != 0)

    def seq_terms(self, batch: dict[str, torch.Tensor],
                  vectors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-item loss summed over each sequence's supervised positions, and their count ->
        (B,), (B,). ``vectors`` replaces the item table (for input and output alike): how a
        training hook (APR) perturbs item vectors without forward hooks.
        """
        vectors = self.item_vectors() if vectors is None else vectors
        h, target, supervised = self._supervised(batch, vectors)
        return position_loss(h, target, supervised, vectors, self.loss_kind)

    def seq_loss(self, batch: dict[str, torch.Tensor],
                 vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Each sequence's mean loss over its supervised positions -> (B,)."""
        total, count = self.seq_terms(batch, vectors)
        return total / count.clamp(min=1)

    def batch_loss(self, batch: dict[str, torch.Tensor],
                   vectors: torch.Tensor | None = None) -> torch.Tensor:
        """The scalar a training step minimises, each user's terms times ``batch["weights"]``.

        ``position`` (the reference's): the mean over every supervised position of the batch,
        so a user counts in proportion to its length. ``user``: the mean over users of each
        user's mean, so a short (e.g. injected) user weighs as much as a long one. Both are
        one weight per supervised position, which lets the full-softmax loss run fused
        (``fused_ce``: the same sum, without the positions x items logits in memory).
        """
        vectors = self.item_vectors() if vectors is None else vectors
        h, target, supervised = self._supervised(batch, vectors)
        count, w = supervised.sum(1), batch["weights"]
        if self.loss_average == "user":
            per_row = w / (count.clamp(min=1) * len(w))
        else:
            per_row = w / count.sum().clamp(min=1)
        if self.loss_kind == "ce":
            flat = supervised.reshape(-1).nonzero(as_tuple=True)[0]
            return weighted_ce(h, vectors, flat, target.reshape(-1)[flat],
                               per_row.repeat_interleave(count))
        total, _ = position_loss(h, target, supervised, vectors, self.loss_kind)
        return (per_row * total).sum()

    def set_item_features(self, features: np.ndarray) -> None:
        """Swap the title-embedding matrix (text items only), e.g. for triggered titles."""
        self.items.set_features(features)

    def item_features(self) -> np.ndarray | None:
        """The current title-embedding matrix (text items), None for ID items."""
        feats = getattr(self.items, "features", None)
        return None if feats is None else feats.detach().cpu().numpy().copy()


def position_loss(h: torch.Tensor, target: torch.Tensor, supervised: torch.Tensor,
                  vectors: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss summed over each row's supervised positions, and their count -> (B,), (B,).

    ``ce``: softmax over all items (padding excluded), the strong default on catalogues of
    up to ~10k items. ``bce``: the reference's per-position BCE against one uniformly drawn
    negative (DESIGN §9); the negative is redrawn if it equals the positive.
    """
    rows = supervised.nonzero(as_tuple=True)[0]
    hv, tv = h[supervised], target[supervised]
    if kind == "ce":
        logits = hv @ vectors[1:].T  # column j is item j + 1; padding is never a class
        loss = F.cross_entropy(logits, tv - 1, reduction="none")
    else:
        n_items = vectors.shape[0] - 1
        neg = torch.randint(1, n_items + 1, tv.shape, device=tv.device)
        neg = torch.where(neg == tv, neg % n_items + 1, neg)
        # one lookup for both: each lookup's backward is a dense (n_items + 1, d) gradient,
        # a cost per step that dominates on a large catalogue
        pair = F.embedding(torch.stack([tv, neg]), vectors)
        logit = (hv * pair).sum(-1)
        loss = F.softplus(-logit[0]) + F.softplus(logit[1])
    per_row = torch.zeros(h.shape[0], device=h.device, dtype=loss.dtype).index_add(0, rows, loss)
    return per_row, supervised.sum(1)

