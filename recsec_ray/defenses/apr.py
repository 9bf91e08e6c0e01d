"""APR-style adversarial training (He et al., SIGIR'18) for sequential backbones.

Fake users work by nudging item vectors; training also against the worst small nudge makes the
model less sensitive to them. Each batch adds ``apr_reg * L(item vectors + Δ)`` with
``Δ_i = apr_eps * g_i / ||g_i||``, ``g`` the gradient of the batch loss with respect to the item
table (per-row normalised, as in the APR authors' code). The perturbation sits on the output of
the backbone's item encoder (``model.items``), so ID and text items are handled alike. It needs
no detection, so it flags nobody and reports no detection scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..config import SEQUENTIAL
from ..errors import ConfigError
from .base import DefenseContext, Sanitation


class APRHook:
    def __init__(self, eps: float, reg: float):
        self.eps, self.reg = eps, reg
        self._delta: torch.Tensor | None = None  # added to the item table while set
        self._probe: torch.Tensor | None = None  # zero leaf whose gradient is g
        self._last: torch.Tensor | None = None  # the table of the trainer's last forward
        self._installed: set[int] = set()

    def on_epoch_start(self, epoch: int, model: Any, weights: np.ndarray) -> np.ndarray:
        return weights

    def _install(self, model: Any) -> None:
        if id(model) in self._installed:
            return
        items = getattr(model, "items", None)
        if not isinstance(items, torch.nn.Module):
            raise ConfigError("defense.name: apr needs a backbone with an item encoder "
                              "(sasrec, gru4rec, bert4rec)")
        items.register_forward_hook(self._perturb)
        self._installed.add(id(model))

    def _perturb(self, module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        if self._probe is not None:
            return output + self._probe
        if self._delta is not None:
            return output + self._delta
        if torch.is_grad_enabled() and output.requires_grad:
            self._last = output
        return output

    def extra_loss(self, model: Any, batch: dict[str, torch.Tensor],
                   loss: torch.Tensor) -> torch.Tensor:
        self._install(model)
        weights = batch.get("weights")
        # 1) g = d loss / d item table: from the trainer's own forward when the hook saw it,
        #    else (first batch) through a zero probe on a fresh forward
        grad = None
        if self._last is not None:
            (grad,) = torch.autograd.grad(loss, self._last, retain_graph=True,
                                          allow_unused=True)
            self._last = None
        if grad is None:
            table = model.item_vectors()
            self._probe = torch.zeros_like(table, requires_grad=True)
            try:
                probe_loss = _weighted(model.seq_loss(batch), weights)
                (grad,) = torch.autograd.grad(probe_loss, self._probe)
            finally:
                self._probe = None
        # 2) the loss under the worst nudge of size eps per item
        self._delta = (self.eps * F.normalize(grad, dim=1)).detach()
        try:
            adv = _weighted(model.seq_loss(batch), weights)
        finally:
            self._delta = None
        return loss + self.reg * adv


def _weighted(per_user: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return (per_user * weights).mean() if weights is not None else per_user.mean()


def apr(ctx: DefenseContext) -> Sanitation:
    if ctx.model_cfg.backbone not in SEQUENTIAL:
        raise ConfigError(f"defense.name: apr trains item vectors adversarially; "
                          f"model.backbone={ctx.model_cfg.backbone!r} has none")
    san = Sanitation.keep_all(ctx.data)
    san.hook = APRHook(ctx.cfg.apr_eps, ctx.cfg.apr_reg)
    san.stats = {"apr_eps": ctx.cfg.apr_eps, "apr_reg": ctx.cfg.apr_reg}
    return san
