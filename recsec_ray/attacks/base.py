"""What every attack receives and returns.

An attack is a function ``attack(ctx: AttackContext) -> PoisonedData``. Fake users are appended
after the real ones, so ``data.seqs[:n_real]`` is the clean population and evaluation tests
only those; ground truth (which users are fake, which titles carry triggers) stays here and is
never shown to a defense.
"""

from __future__ import annotations

from collections.abc import Callable
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
    return round(ctx.cfg.poison_rate * ctx.data.n_users)


def sample_lengths(data: SequenceData, n: int, rng: np.random.Generator) -> np.ndarray:
    """Fake users' lengths drawn from the real length distribution."""
    lengths = np.array([len(s) for s in data.seqs])
    return rng.choice(lengths, size=n, replace=True)


# ---- helpers shared by the attacks (additive) ------------------------------------------------
def popular_items(data: SequenceData, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """The k most frequent items in the training parts (ties: lower index first)."""
    counts = data.item_counts("train").astype(np.int64)
    counts[0] = -1
    if exclude is not None and len(exclude):
        counts[np.asarray(exclude, dtype=np.int64)] = -1
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] >= 0]
    return order[:k].astype(np.int64)


def filler_pool(data: SequenceData, targets: np.ndarray) -> np.ndarray:
    """Every real item except the targets."""
    return np.setdiff1d(np.arange(1, data.n_items + 1, dtype=np.int64), targets)


def draw(rng: np.random.Generator, pool: np.ndarray, k: int) -> np.ndarray:
    """k distinct items from pool while it lasts; repeats only when the pool is too small."""
    k = max(int(k), 0)
    if k <= len(pool):
        return rng.choice(pool, size=k, replace=False).astype(np.int64)
    extra = rng.choice(pool, size=k - len(pool), replace=True)
    return np.concatenate([rng.permutation(pool), extra]).astype(np.int64)


def body_length(total_length: int, n_targets: int) -> int:
    """Length of a fake user's training part.

    The trainer learns only from ``seq[:-2]`` (the last two items are the held-out
    valid/test slots of every user), so an attack puts what it wants learnt there and appends
    two ordinary items; the training part never drops below ``n_targets + 1`` (pass the
    number of target slots: targets times ``target_occurrences``).
    """
    return max(int(total_length) - 2, n_targets + 1)


def carried_targets(ctx: AttackContext, user: int) -> np.ndarray:
    """Indices (into ``ctx.targets``) of the targets fake user ``user`` carries:
    ``attack.targets_per_user`` of them in rotation, so every target is carried by the same
    number of fake users (0: all of them)."""
    n, k = len(ctx.targets), ctx.cfg.targets_per_user
    if k == 0 or k >= n:
        return np.arange(n, dtype=np.int64)
    return (np.arange(k, dtype=np.int64) + user * k) % n


def target_slots(ctx: AttackContext, user: int) -> np.ndarray:
    """The targets fake user ``user`` carries, each ``attack.target_occurrences`` times."""
    picked = np.asarray(ctx.targets, dtype=np.int64)[carried_targets(ctx, user)]
    return np.tile(picked, ctx.cfg.target_occurrences)


def targets_plus_fillers(ctx: AttackContext, fillers: Callable[[np.random.Generator, int],
                         np.ndarray], salt: int) -> list[np.ndarray]:
    """Random-order fake users: their targets (``target_slots``) +
    ``fillers(rng, k)`` (k distinct items), lengths like real users'.

    Shared by Random (uniform fillers) and Bandwagon (popular + uniform fillers).
    """
    rng = ctx.rng(salt)
    n = n_fake_users(ctx)
    fakes = []
    for user, length in enumerate(sample_lengths(ctx.data, n, rng)):
        targets = target_slots(ctx, user)
        body_len = body_length(length, len(targets))
        picks = fillers(rng, body_len - len(targets) + 2)
        body = rng.permutation(np.concatenate([targets, picks[:-2]]))
        fakes.append(np.concatenate([body, picks[-2:]]))
    return fakes


def poisoned(ctx: AttackContext, fakes: list[np.ndarray], *, titles: list[str] | None = None,
             poisoned_items: np.ndarray | None = None, trigger: str | None = None,
             stats: dict[str, Any] | None = None) -> PoisonedData:
    """Append fake users after the real ones and package the ground truth."""
    data = ctx.data.with_users(fakes, [f"fake-{i}" for i in range(len(fakes))])
    if titles is not None:
        data = data.with_titles(titles)
    flags = poisoned_items if poisoned_items is not None else \
        np.zeros(ctx.data.n_items + 1, dtype=bool)
    base = {"n_fake": len(fakes),
            "fake_interactions": int(sum(len(s) - 2 for s in fakes))}
    return PoisonedData(data=data, n_real=ctx.data.n_users, targets=np.asarray(ctx.targets),
                        poisoned_items=flags, trigger=trigger, stats={**base, **(stats or {})})
