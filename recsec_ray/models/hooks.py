"""The training-hook contract: how a defense acts while a victim trains (LoRec, APR).

The trainer calls a hook at each epoch start (per-user loss weights) and on each batch (the loss
to optimise, given the item table the batch used, so a hook can perturb item vectors without
forward hooks). A hook that detects while the victim trains hands its final detection scores
back through ``report()``; the job folds them into the defense's ``Sanitation``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class HookReport:
    """What a hook learned while the victim trained."""

    user_scores: np.ndarray | None = None  # final p(fraud) per user (None: no detection)
    stats: dict[str, Any] = field(default_factory=dict)  # logged as ``defense_<key>``


class TrainHook(Protocol):
    """``selection_start_epoch`` (0-based or None): the trainer does not stop early before it
    and restarts model selection there, so the model kept is one trained under the defense
    (LoRec's reweighting starts late)."""

    selection_start_epoch: int | None

    def on_epoch_start(self, epoch: int, model: Any, weights: np.ndarray) -> np.ndarray:
        """Per-user loss weights for this epoch. ``weights`` is always the sanitation's own
        (never last epoch's return), so a hook's factors do not compound; a user the
        sanitation gave weight 0 stays at 0 whatever the hook returns."""
        ...

    def batch_loss(self, model: Any, batch: dict[str, torch.Tensor], loss: torch.Tensor,
                   vectors: torch.Tensor) -> torch.Tensor:
        """The loss to optimise; ``loss`` was computed with item table ``vectors``."""
        ...

    def report(self) -> HookReport:
        ...


class Hook:
    """Defaults for every part of the contract a hook does not need."""

    selection_start_epoch: int | None = None

    def on_epoch_start(self, epoch: int, model: Any, weights: np.ndarray) -> np.ndarray:
        return weights

    def batch_loss(self, model: Any, batch: dict[str, torch.Tensor], loss: torch.Tensor,
                   vectors: torch.Tensor) -> torch.Tensor:
        return loss

    def report(self) -> HookReport:
        return HookReport()
