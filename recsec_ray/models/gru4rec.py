"""GRU4Rec (Hidasi et al., ICLR'16) in its sequential form: a GRU over the item sequence.

item vectors -> dropout -> N-layer GRU -> Linear. Batches are left-padded, but a GRU must
start on the first real item (padding steps would otherwise drift its state, and the drift
would depend on the amount of padding). So each row is rotated to right padding, run, and
rotated back: outputs at real slots are exact, padding slots are zeroed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from .base import SeqRecommender
from .layers import dropout


class GRU4Rec(SeqRecommender):
    def __init__(self, cfg: ModelConfig, n_items: int, max_len: int,
                 item_features: np.ndarray | None = None):
        super().__init__(cfg, n_items, max_len, item_features)
        self.dropout = cfg.dropout
        self.gru = nn.GRU(cfg.dim, cfg.dim, num_layers=cfg.layers, batch_first=True,
                          dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.out = nn.Linear(cfg.dim, cfg.dim)

    def _hidden(self, seqs: torch.Tensor, vectors: torch.Tensor,
                last: bool = False) -> torch.Tensor:
        real = seqs != 0
        L = seqs.shape[1]
        n_pad = L - real.sum(1, keepdim=True)
        slots = torch.arange(L, device=seqs.device).unsqueeze(0)
        to_right = (slots + n_pad) % L  # right[i, j] = left[i, (j + n_pad_i) % L]
        to_left = (slots - n_pad) % L
        x = dropout(nn.functional.embedding(seqs.gather(1, to_right), vectors), self.dropout,
                    self.training)
        h, _ = self.gru(x)
        if last:  # the last real step sits at slot (L - 1 - n_pad) of the right-padded rows
            end = (L - 1 - n_pad).clamp(min=0)
            h = h.gather(1, end.unsqueeze(-1).expand(-1, -1, h.shape[-1]))[:, 0]
            return self.out(h) * real[:, -1:]
        h = h.gather(1, to_left.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        return self.out(h) * real.unsqueeze(-1)
