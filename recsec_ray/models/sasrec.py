"""SASRec (Kang & McAuley, ICDM'18): causal self-attention over the item sequence.

item vectors + learned positions -> dropout -> N pre-LN Transformer blocks (each position sees
itself and earlier items) -> LayerNorm. The state at the last slot scores the next item against
the same item table. Positions count from the left of the padded window, so the most recent
item always sits at slot ``max_len - 1``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from .base import SeqRecommender
from .layers import Block, attention_mask


class SASRec(SeqRecommender):
    def __init__(self, cfg: ModelConfig, n_items: int, max_len: int,
                 item_features: np.ndarray | None = None):
        super().__init__(cfg, n_items, max_len, item_features)
        self.pos = nn.Parameter(torch.randn(max_len, cfg.dim) * 0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.dropout)
                                    for _ in range(cfg.layers))
        self.ln_out = nn.LayerNorm(cfg.dim)

    def _hidden(self, seqs: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        real = (seqs != 0).unsqueeze(-1)
        x = self.drop(nn.functional.embedding(seqs, vectors) + self.pos[-seqs.shape[1]:]) * real
        mask = attention_mask(seqs, causal=True)
        for block in self.blocks:
            x = block(x, mask) * real  # padding slots stay zero
        return self.ln_out(x)
