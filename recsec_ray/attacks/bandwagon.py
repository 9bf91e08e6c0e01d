"""Bandwagon attack: targets plus fillers drawn from the most popular items.

Popular fillers make fake users resemble the many real users who watched the same hits, so the
targets attach to the states most test users are in (Burke et al., 2005).
"""

from __future__ import annotations

from .base import AttackContext, PoisonedData, poisoned, popular_items, targets_plus_fillers


def bandwagon_attack(ctx: AttackContext) -> PoisonedData:
    pool = popular_items(ctx.data, ctx.cfg.filler_pool, exclude=ctx.targets)
    return poisoned(ctx, targets_plus_fillers(ctx, pool, salt=2),
                    stats={"filler_pool": len(pool)})
