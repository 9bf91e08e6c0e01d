"""What every attack receives and returns.

An attack is a function ``attack(ctx: AttackContext) -> PoisonedData``. Fake users are appended
after the real ones, so ``data.seqs[:n_real]`` is the clean population and evaluation tests
only those; ground truth (which users are fake, which titles carry triggers) stays here and is
never shown to a defense.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import AttackConfig, ModelConfig
from ..data.sequences import SequenceData

if TYPE_CHECKING:
    from ..llm.client import LLMClient


@dataclass(frozen=True)
class AttackContext:
    data: SequenceData  # clean, preprocessed
    targets: np.ndarray  # target item indices (drawn by the job, same for attack 'none')
    cfg: AttackConfig
    model_cfg: ModelConfig  # victim settings (DP trains a surrogate of the same kind)
    seed: int
    llm: LLMClient | None = None
    device: str = "cpu"

    def rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, 0xA77AC4, salt])


@dataclass(frozen=True)
class PoisonedData:
    data: SequenceData  # real users first, then fake users; titles possibly triggered
    n_real: int
    targets: np.ndarray
    poisoned_items: np.ndarray  # bool, len n_items + 1: titles carrying a trigger
    trigger: str | None = None  # BadRec trigger, appended at test time to pushed items
    stats: dict[str, Any] = field(default_factory=dict)  # attack-specific, logged as metrics

    @property
    def is_fake(self) -> np.ndarray:
        flags = np.zeros(self.data.n_users, dtype=bool)
        flags[self.n_real:] = True
        return flags

    @property
    def n_fake(self) -> int:
        return self.data.n_users - self.n_real


def no_poison(ctx: AttackContext) -> PoisonedData:
    """Attack 'none': the clean data, with the same targets drawn and measured."""
    return PoisonedData(data=ctx.data, n_real=ctx.data.n_users, targets=ctx.targets,
                        poisoned_items=np.zeros(ctx.data.n_items + 1, dtype=bool))


def n_fake_users(ctx: AttackContext) -> int:
    return int(round(ctx.cfg.poison_rate * ctx.data.n_users))


def sample_lengths(data: SequenceData, n: int, rng: np.random.Generator) -> np.ndarray:
    """Fake users' lengths drawn from the real length distribution."""
    lengths = np.array([len(s) for s in data.seqs])
    return rng.choice(lengths, size=n, replace=True)
