"""BERT4Rec (Sun et al., CIKM'19): bidirectional self-attention trained by cloze.

Training: a share ``mask_prob`` of each sequence's items is replaced by a [MASK] token (at
least one per sequence) and predicted from both sides. Scoring the next item: drop the oldest
item, append [MASK] at the end, and read the state at that slot.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from .base import SeqRecommender
from .layers import Block, additive, attention_mask, dropout


class BERT4Rec(SeqRecommender):
    def __init__(self, cfg: ModelConfig, n_items: int, max_len: int,
                 item_features: np.ndarray | None = None):
        super().__init__(cfg, n_items, max_len, item_features)
        self.mask_id, self.mask_prob = n_items + 1, cfg.mask_prob
        self.mask_vector = nn.Parameter(torch.randn(1, cfg.dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(max_len, cfg.dim) * 0.02)
        self.dropout = cfg.dropout
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.dropout)
                                    for _ in range(cfg.layers))
        self.ln_out = nn.LayerNorm(cfg.dim)

    def _hidden(self, seqs: torch.Tensor, vectors: torch.Tensor,
                last: bool = False) -> torch.Tensor:
        real = (seqs != 0).unsqueeze(-1)
        table = torch.cat([vectors, self.mask_vector])  # index n_items + 1 = [MASK]
        x = nn.functional.embedding(seqs, table) + self.pos[-seqs.shape[1]:]
        x = dropout(x, self.dropout, self.training) * real
        mask = attention_mask(seqs, causal=False)
        bias = additive(mask, x.dtype) if self.training else None
        for i, block in enumerate(self.blocks):
            top = last and i == len(self.blocks) - 1
            x = block(x, mask, bias, last=top) * (real[:, -1:] if top else real)
        return self.ln_out(x[:, -1] if last else x)

    def user_vectors(self, seqs: torch.Tensor) -> torch.Tensor:
        """The [MASK] probe's state. A window narrower than ``max_len`` (trimmed padding)
        gets the probe appended; a full one drops its oldest slot, as before trimming."""
        probe = torch.full_like(seqs[:, :1], self.mask_id)
        keep = seqs if seqs.shape[1] < self.max_len else seqs[:, 1:]
        return self._hidden(torch.cat([keep, probe], dim=1), self.item_vectors(), last=True)

    def _supervised(self, batch: dict[str, torch.Tensor], vectors: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cloze: the masked slots of ``batch["target"]`` are supervised, predicting
        themselves."""
        seq = batch["target"]
        real = seq != 0
        masked = real & (torch.rand(seq.shape, device=seq.device) < self.mask_prob)
        none = ~masked.any(1) & real.any(1)
        masked[none, -1] = True  # left padding: the last slot of a non-empty row is real
        return self._hidden(seq.masked_fill(masked, self.mask_id), vectors), seq, masked
