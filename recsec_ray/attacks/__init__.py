"""Attack registry, target selection, and the defender's simulation entry point.

``ATTACKS[name](ctx) -> PoisonedData``; the heavier attacks (DP trains a surrogate, LLM and
BadRec talk to the LLM service) import their dependencies only when called. Each entry
declares what it needs (``registry.Entry``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..config import AttackConfig, ModelConfig
from ..data.sequences import SequenceData
from ..errors import ConfigError
from ..registry import Entry, Registry, lazy
from .bandwagon import bandwagon_attack
from .base import AttackContext, PoisonedData, no_poison
from .random import random_attack

ATTACKS = Registry("attack.name", {
    "none": Entry(no_poison),
    "random": Entry(random_attack, simulable=True),
    "bandwagon": Entry(bandwagon_attack, simulable=True),
    "dp": Entry(lazy(f"{__name__}.dp", "dp_attack")),
    "llm": Entry(lazy(f"{__name__}.llm", "llm_attack"), needs_llm=True),
    "badrec": Entry(lazy(f"{__name__}.badrec", "badrec_attack"), needs_llm=True,
                    victims="titles"),
})


def get_attack(name: str) -> Callable[[AttackContext], PoisonedData]:
    return ATTACKS[name]


def simulable_attacks() -> list[str]:
    return ATTACKS.where(simulable=True)


def simulate_attack(data: SequenceData, name: str, n_users: int, seed: int, *,
                    model_cfg: ModelConfig, device: str = "cpu"
                    ) -> tuple[list[np.ndarray], np.ndarray]:
    """``n_users`` fake users of attack ``name`` over ``data`` (one campaign: targets drawn
    with ``seed``) -> (their sequences, the targets). The job hands this to defenses as a
    callable, so a defense never imports the attacks."""
    entry = ATTACKS.entry(name)
    if not entry.simulable:
        raise ConfigError(f"defense.known_attack: {name!r} cannot be simulated by a defender "
                          f"(simulable: {', '.join(simulable_attacks())})")
    # poison_rate chosen so the attack's own rounding yields exactly n_users; a campaign
    # promotes the default number of targets, at most a twentieth of the catalogue (on a tiny
    # one, 20 targets would be every unpopular item and every campaign the same)
    n_targets = max(1, min(AttackConfig.n_targets, data.n_items // 20))
    acfg = AttackConfig(name=name, poison_rate=min(1.0, n_users / data.n_users),
                        n_targets=n_targets)
    targets = choose_targets(data, acfg, seed)
    poisoned = entry.fn(AttackContext(data=data, targets=targets, cfg=acfg, model_cfg=model_cfg,
                                      seed=seed, llm=None, device=device))
    seqs = [np.asarray(s, dtype=np.int64) for s in poisoned.data.seqs[poisoned.n_real:]]
    return seqs[:n_users], targets


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
           "no_poison", "simulable_attacks", "simulate_attack"]
