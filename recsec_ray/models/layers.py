"""A small pre-LayerNorm Transformer block shared by SASRec (causal) and BERT4Rec (bidirectional).

Written out instead of ``nn.TransformerEncoder`` because that module, given both a causal mask
and a key-padding mask on left-padded rows, emits NaN for rows whose queries see no key
(DESIGN §6). Here every query always sees at least itself, so softmax is never over an empty set.

Training attention is written out too (scores, additive mask, softmax, dropout): with dropout
on, ``scaled_dot_product_attention`` takes this same math path on CPU anyway, but draws its
dropout mask with ``bernoulli_``. Dropout masks here come from :func:`dropout`, several times
cheaper on CPU; evaluation (no dropout) uses SDPA's fused kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_BITS = 15  # random bits per dropout decision (four decisions per 64-bit draw)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout whose CPU mask costs ~1/8 of ``F.dropout``'s (seeded, deterministic).

    On CPU ``bernoulli_`` draws a 32-bit Mersenne-Twister number per element (~13 ns here, a
    tenth of an SASRec step); one 64-bit draw split into four 15-bit fields decides four
    elements instead. ``p`` is rounded to a multiple of 2^-15 (0.2 -> 0.20001) and the kept
    values are scaled by the matching 1 / (1 - p). CUDA keeps torch's own kernel.
    """
    if not training or p == 0.0:
        return x
    if x.is_cuda:
        return F.dropout(x, p, True)
    cut = round(p * (1 << _BITS))
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_()
    fields = words.view(torch.int16)[:x.numel()].view(x.shape)
    keep = (fields & ((1 << _BITS) - 1)) >= cut
    return x * keep.to(x.dtype).mul_((1 << _BITS) / ((1 << _BITS) - cut))


def attention_mask(seqs: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, 1, L, L) bool, True = may attend: real keys (earlier ones if causal), plus itself."""
    L = seqs.shape[1]
    allowed = (seqs != 0)[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=seqs.device).tril()
    return allowed | torch.eye(L, dtype=torch.bool, device=seqs.device)


def additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask as the 0 / -inf bias added to attention scores (built once per forward)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask,
                                                                              float("-inf"))


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

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None,
                last: bool = False) -> torch.Tensor:
        """``mask`` from :func:`attention_mask`; ``bias`` its :func:`additive` form (training).
        ``last``: only the last slot's output (B, 1, D); its keys and values still come from
        every slot, so it equals the full forward's last slot."""
        B, L, D = x.shape
        hd = D // self.heads
        h = self.ln1(x)
        if last:
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(h[:, -1:], w[:D], b[:D])
            k, v = F.linear(h, w[D:], b[D:]).split(D, dim=-1)
            mask, bias = mask[:, :, -1:], None if bias is None else bias[:, :, -1:]
            x = x[:, -1:]
        else:
            q, k, v = self.qkv(h).split(D, dim=-1)
        Lq = q.shape[1]
        q = q.view(B, Lq, self.heads, hd).transpose(1, 2)
        k, v = (t.view(B, L, self.heads, hd).transpose(1, 2) for t in (k, v))
        if self.training and self.dropout > 0:
            att = torch.matmul(q, k.transpose(-2, -1)).mul_(hd ** -0.5)
            att = att.add_(bias if bias is not None else additive(mask, att.dtype))
            y = dropout(att.softmax(-1), self.dropout, True) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + dropout(self.proj(y.transpose(1, 2).reshape(B, Lq, D)), self.dropout,
                        self.training)
        return x + dropout(self.ffn(self.ln2(x)), self.dropout, self.training)
