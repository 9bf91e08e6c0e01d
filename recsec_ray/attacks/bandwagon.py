"""Bandwagon attack (Burke et al., 2005): targets, a share of "selected" popular items, and
uniformly random fillers.

The popular items make fake users overlap the many real users who watched the same hits; the
random fillers give the profiles variety, as in the classic profile and in the baselines of the
poisoning papers (e.g. Fang et al., 2018: a tenth of the fillers from the most popular items).
``attack.popular_share = 1`` makes every body filler popular (while the pool lasts; the two
held-out items stay random), which on ML-100K SASRec barely moves the targets (t_hr@50 1.8×
no attack at 5 %, seed 0): the targets then only ever follow states that real users fill with
popular next items.
"""

from __future__ import annotations

import numpy as np

from .base import (
    AttackContext,
    PoisonedData,
    draw,
    filler_pool,
    poisoned,
    popular_items,
    targets_plus_fillers,
)


def bandwagon_attack(ctx: AttackContext) -> PoisonedData:
    popular = popular_items(ctx.data, ctx.cfg.filler_pool, exclude=ctx.targets)
    rest = np.setdiff1d(filler_pool(ctx.data, ctx.targets), popular)
    share = ctx.cfg.popular_share

    def fillers(rng: np.random.Generator, k: int) -> np.ndarray:
        # k - 2 body fillers, then the two held-out tail items, which come from the random
        # part; either part tops up the other when its pool runs short
        n_pop = min(max(round(share * (k - 2)), k - len(rest)), len(popular),
                    k - min(2, len(rest)))
        picked.append(min(n_pop, k - 2) / max(k - 2, 1))
        return np.concatenate([draw(rng, popular, n_pop), draw(rng, rest, k - n_pop)])

    picked: list[float] = []
    fakes = targets_plus_fillers(ctx, fillers, salt=2)
    return poisoned(ctx, fakes, stats={"filler_pool": len(popular),
                                       "popular_share": float(np.mean(picked)) if picked
                                       else 0.0})
