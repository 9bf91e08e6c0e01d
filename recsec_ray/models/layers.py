"""A small pre-LayerNorm Transformer block shared by SASRec (causal) and BERT4Rec (bidirectional).

Written out instead of ``nn.TransformerEncoder`` because that module, given both a causal mask
and a key-padding mask on left-padded rows, emits NaN for rows whose queries see no key
(DESIGN §6). Here every query always sees at least itself, so softmax is never over an empty set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention_mask(seqs: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, 1, L, L) bool, True = may attend: real keys (earlier ones if causal), plus itself."""
    L = seqs.shape[1]
    allowed = (seqs != 0)[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=seqs.device).tril()
    return allowed | torch.eye(L, dtype=torch.bool, device=seqs.device)


class Block(nn.Module):
    """x + SelfAttention(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)
        q, k, v = (t.view(B, L, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.ffn(self.ln2(x)))
