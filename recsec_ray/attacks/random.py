"""Random attack: every fake user holds all targets plus uniformly random fillers.

The weakest classic baseline (Lam & Riedl, 2004): fillers carry no signal, so the targets are
learnt only as "items that co-occur with anything".
"""

from __future__ import annotations

from .base import AttackContext, PoisonedData, draw, filler_pool, poisoned, targets_plus_fillers


def random_attack(ctx: AttackContext) -> PoisonedData:
    pool = filler_pool(ctx.data, ctx.targets)
    return poisoned(ctx, targets_plus_fillers(ctx, lambda rng, k: draw(rng, pool, k), salt=1))
