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
    def _hidden(self, seqs: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded indices and the item table -> (B, L, d) states."""

    # ---- public API (contract) ---------------------------------------------------------------
    def item_vectors(self) -> torch.Tensor:
        """(n_items + 1, d); row 0 is padding and is zero."""
        return self.items()

    def hidden(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item indices -> (B, L, d) per-position states."""
        return self._hidden(seqs, self.item_vectors())

    def user_vectors(self, seqs: torch.Tensor) -> torch.Tensor:
        """State that scores the next item: the hidden state at the last (most recent) slot."""
        return self.hidden(seqs)[:, -1]

    def scores(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.user_vectors(seqs) @ self.item_vectors().T

    def seq_terms(self, batch: dict[str, torch.Tensor],
                  vectors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-item loss summed over each sequence's positions, and their count -> (B,), (B,).

        ``batch["input"][:, t]`` is followed by ``batch["target"][:, t]``; positions where
        either is padding are not supervised. ``vectors`` replaces the item table (for input
        and output alike): how a training hook (APR) perturbs item vectors without forward
        hooks.
        """
        vectors = self.item_vectors() if vectors is None else vectors
        inp, target = batch["input"], batch["target"]
        h = self._hidden(inp, vectors)
        return position_loss(h, target, (inp != 0) & (target != 0), vectors, self.loss_kind)

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
        user's mean, so a short (e.g. injected) user weighs as much as a long one.
        """
        total, count = self.seq_terms(batch, vectors)
        w = batch["weights"]
        if self.loss_average == "user":
            return (w * total / count.clamp(min=1)).mean()
        return (w * total).sum() / count.sum().clamp(min=1)

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
        pos_logit = (hv * F.embedding(tv, vectors)).sum(-1)
        neg_logit = (hv * F.embedding(neg, vectors)).sum(-1)
        loss = F.softplus(-pos_logit) + F.softplus(neg_logit)
    per_row = torch.zeros(h.shape[0], device=h.device, dtype=loss.dtype).index_add(0, rows, loss)
    return per_row, supervised.sum(1)

