"""What every defense receives and returns.

A defense is a function ``defend(ctx: DefenseContext) -> Sanitation``. It sees the poisoned data
only (no ground truth) plus what the defender knows: the attack it may simulate for training
data, handed in as a callable (``ctx.simulate``) so no defense imports the attacks. Defenses
that act during training (LoRec's reweighting, APR) return a ``models.hooks.TrainHook``; one
that detects while the victim trains reports its final scores through the hook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import DefenseConfig, LLMConfig, ModelConfig
from ..data.sequences import SequenceData
from ..models.hooks import HookReport, TrainHook

if TYPE_CHECKING:
    from ..llm.client import LLMClient

# (data, attack name, n users, seed) -> (fake sequences, their campaign's targets)
Simulator = Callable[[SequenceData, str, int, int], tuple[list[np.ndarray], np.ndarray]]


@dataclass(frozen=True)
class DefenseContext:
    data: SequenceData  # poisoned: real and fake users mixed, titles as the attacker left them
    cfg: DefenseConfig
    model_cfg: ModelConfig
    seed: int
    llm: LLMClient | None = None
    device: str = "cpu"
    llm_cfg: LLMConfig | None = None  # which model embeds / generates (None: the defaults)
    simulate: Simulator | None = None  # the known attack, run by the defender (LLM4Dec, LoRec)

    @property
    def llm_settings(self) -> LLMConfig:
        return self.llm_cfg if self.llm_cfg is not None else LLMConfig()

    def rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, 0xDEF, salt])


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
    # earlier stages' item scores and thresholds by stage name (P-Scanner's "scanner", before
    # its consensus step): reported as ``item_auc_<stage>`` etc. beside the final ones
    item_stage_scores: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)
    hook: TrainHook | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def keep_all(cls, data: SequenceData) -> Sanitation:
        return cls(user_weights=np.ones(data.n_users, dtype=np.float32),
                   removed_users=np.zeros(data.n_users, dtype=bool))

    def apply(self, data: SequenceData) -> tuple[SequenceData, np.ndarray]:
        """The data the victim trains on and each user's loss weight (0 for removed users).

        Titles are the cleaned ones; interactions with removed items leave the training parts
        only (valid and test items stay, so the leave-one-out split is the same)."""
        if self.titles is not None:
            data = data.with_titles(self.titles)
        if self.removed_items is not None and self.removed_items.any():
            gone = self.removed_items
            data = replace(data, seqs=[np.concatenate([s[:-2][~gone[s[:-2]]], s[-2:]])
                                       for s in data.seqs])
        weights = (self.user_weights * ~self.removed_users).astype(np.float32)
        return data, weights

    def with_report(self, report: HookReport) -> Sanitation:
        """This sanitation once its hook has reported what it found while the victim trained."""
        scores = self.user_scores if report.user_scores is None else report.user_scores
        return replace(self, user_scores=scores, stats={**self.stats, **report.stats})
