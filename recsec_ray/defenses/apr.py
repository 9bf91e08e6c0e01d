"""APR-style adversarial training (He et al., SIGIR'18) for sequential backbones.

Fake users work by nudging item vectors; training also against the worst small nudge makes the
model less sensitive to them. Each batch adds ``apr_reg * L(item vectors + Δ)`` with
``Δ_i = apr_eps * g_i / ||g_i||``, ``g`` the gradient of the batch loss with respect to the item
table (per-row normalised, as in the APR authors' code). The perturbation sits on the output of
the backbone's item encoder (the table the trainer hands the hook), so ID and text items are
handled alike. It needs no detection, so it flags nobody and reports no detection scores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from ..models.hooks import Hook
from .base import DefenseContext, Sanitation


class APRHook(Hook):
    def __init__(self, eps: float, reg: float):
        self.eps, self.reg = eps, reg

    def batch_loss(self, model: Any, batch: dict[str, torch.Tensor], loss: torch.Tensor,
                   vectors: torch.Tensor) -> torch.Tensor:
        # g = d loss / d item table, from the trainer's own forward
        (grad,) = torch.autograd.grad(loss, vectors, retain_graph=True)
        delta = (self.eps * F.normalize(grad, dim=1)).detach()
        adv = model.batch_loss(batch, vectors + delta)
        return loss + self.reg * adv


def apr(ctx: DefenseContext) -> Sanitation:
    san = Sanitation.keep_all(ctx.data)
    san.hook = APRHook(ctx.cfg.apr_eps, ctx.cfg.apr_reg)
    san.stats = {"apr_eps": ctx.cfg.apr_eps, "apr_reg": ctx.cfg.apr_reg}
    return san
