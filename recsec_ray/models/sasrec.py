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
from .layers import Block, additive, attention_mask, dropout


class SASRec(SeqRecommender):
    def __init__(self, cfg: ModelConfig, n_items: int, max_len: int,
                 item_features: np.ndarray | None = None):
        super().__init__(cfg, n_items, max_len, item_features)
        self.pos = nn.Parameter(torch.randn(max_len, cfg.dim) * 0.02)
        self.dropout = cfg.dropout
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.dropout)
                                    for _ in range(cfg.layers))
        self.ln_out = nn.LayerNorm(cfg.dim)

    def _hidden(self, seqs: torch.Tensor, vectors: torch.Tensor,
                last: bool = False) -> torch.Tensor:
        real = (seqs != 0).unsqueeze(-1)
        x = nn.functional.embedding(seqs, vectors) + self.pos[-seqs.shape[1]:]
        x = dropout(x, self.dropout, self.training) * real
        mask = attention_mask(seqs, causal=True)
        bias = additive(mask, x.dtype) if self.training else None
        for i, block in enumerate(self.blocks):
            top = last and i == len(self.blocks) - 1
            x = block(x, mask, bias, last=top) * (real[:, -1:] if top else real)  # padding: 0
        return self.ln_out(x[:, -1] if last else x)
