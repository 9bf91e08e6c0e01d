"""What every defense receives and returns.

A defense is a function ``defend(ctx: DefenseContext) -> Sanitation``. It sees the poisoned data
only (no ground truth) plus what the defender knows: the attack it may simulate for training
data. Defenses that act during training (LoRec's reweighting, APR) return a ``TrainHook``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..config import DefenseConfig, LLMConfig, ModelConfig
from ..data.sequences import SequenceData

if TYPE_CHECKING:
    import torch

    from ..llm.client import LLMClient


@dataclass(frozen=True)
class DefenseContext:
    data: SequenceData  # poisoned: real and fake users mixed, titles as the attacker left them
    cfg: DefenseConfig
    model_cfg: ModelConfig
    seed: int
    llm: LLMClient | None = None
    device: str = "cpu"
    llm_cfg: LLMConfig | None = None  # which model embeds / generates (None: the defaults)

    @property
    def llm_settings(self) -> LLMConfig:
        return self.llm_cfg if self.llm_cfg is not None else LLMConfig()

    def rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, 0xDEF, salt])


class TrainHook(Protocol):
    """Called by the trainer; lets a defense act while the victim trains.

    A hook may also carry ``selection_start_epoch: int | None`` (0-based): the trainer then
    does not stop early before that epoch and restarts model selection (best validation score
    and patience) at it, as the LoRec reference does once its reweighting starts, so the model
    kept is one trained under the defense.
    """

    def on_epoch_start(self, epoch: int, model: Any, weights: np.ndarray) -> np.ndarray:
        """Return the per-user loss weights to use this epoch. ``weights`` is always the
        sanitation's own (not last epoch's return), so a hook's factors never compound."""
        ...

    def extra_loss(self, model: Any, batch: dict[str, torch.Tensor],
                   loss: torch.Tensor) -> torch.Tensor:
        """Return the loss to optimise (e.g. plus an adversarial term)."""
        ...


@dataclass
class Sanitation:
    user_weights: np.ndarray  # float per user, multiplies that user's training loss
    removed_users: np.ndarray  # bool per user: dropped before training
    titles: list[str] | None = None  # cleaned titles (None: unchanged)
    removed_items: np.ndarray | None = None  # bool per item (len n_items + 1)
    user_scores: np.ndarray | None = None  # p(fraud) per user, for detection metrics
    item_scores: np.ndarray | None = None  # p(poisoned) per item
    user_threshold: float = 0.5
    item_threshold: float = 0.5
    hook: TrainHook | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def keep_all(cls, data: SequenceData) -> Sanitation:
        return cls(user_weights=np.ones(data.n_users, dtype=np.float32),
                   removed_users=np.zeros(data.n_users, dtype=bool))
