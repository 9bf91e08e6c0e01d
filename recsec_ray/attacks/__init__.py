"""Attack registry and target selection.

``ATTACKS[name](ctx) -> PoisonedData``; the heavier attacks (DP trains a surrogate, LLM and
BadRec talk to the LLM service) import their dependencies only when called.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..config import AttackConfig
from ..data.sequences import SequenceData
from ..errors import ConfigError
from ..registry import lazy
from .bandwagon import bandwagon_attack
from .base import AttackContext, PoisonedData, no_poison
from .random import random_attack

ATTACKS: dict[str, Callable[[AttackContext], PoisonedData]] = {
    "none": no_poison,
    "random": random_attack,
    "bandwagon": bandwagon_attack,
    "dp": lazy(f"{__name__}.dp", "dp_attack"),
    "llm": lazy(f"{__name__}.llm", "llm_attack"),
    "badrec": lazy(f"{__name__}.badrec", "badrec_attack"),
}


def get_attack(name: str) -> Callable[[AttackContext], PoisonedData]:
    try:
        return ATTACKS[name]
    except KeyError:
        raise ConfigError(f"attack.name: {name!r} is not one of {', '.join(ATTACKS)}") from None


def choose_targets(data: SequenceData, cfg: AttackConfig, seed: int) -> np.ndarray:
    """Target items for a trial, the same for every attack (``none`` included) given a seed.

    Explicit ``cfg.targets`` win. Otherwise ``n_targets`` are drawn without replacement from
    the candidate pool: items seen at least once in the training parts (an item never trained
    on would make "none" a meaningless baseline), restricted for ``target_pool='unpopular'`` to
    the less popular half of those by training frequency (ties broken by item index).
    """
    if cfg.targets:
        bad = [t for t in cfg.targets if not 1 <= t <= data.n_items]
        if bad:
            raise ConfigError(f"attack.targets: {bad} outside the item range 1..{data.n_items}")
        return np.asarray(cfg.targets, dtype=np.int64)
    if cfg.n_targets > data.n_items:
        raise ConfigError(f"attack.n_targets: {cfg.n_targets} targets but the dataset has only "
                          f"{data.n_items} items")
    counts = data.item_counts("train")
    seen = np.flatnonzero(counts[1:] > 0) + 1
    if cfg.target_pool == "unpopular":
        order = seen[np.argsort(counts[seen], kind="stable")]
        pool = order[: (len(order) + 1) // 2]
    else:
        pool = seen
    if cfg.n_targets > len(pool):
        raise ConfigError(f"attack.n_targets: {cfg.n_targets} targets but only {len(pool)} "
                          f"candidate items in target_pool={cfg.target_pool!r}")
    rng = np.random.default_rng([seed, 0x7A67])
    return np.sort(rng.choice(pool, size=cfg.n_targets, replace=False)).astype(np.int64)


__all__ = ["ATTACKS", "AttackContext", "PoisonedData", "choose_targets", "get_attack",
           "no_poison"]
