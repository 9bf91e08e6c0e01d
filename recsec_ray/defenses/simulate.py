"""The defender's own fake users: a KNOWN attack simulated on the data it observes.

LLM4Dec and LoRec learn what a fraudster looks like from fake users the defender generates
itself (DESIGN §4). The defender cannot tell injected users from real ones, so it runs the known
attack (random or bandwagon) over the poisoned data as observed. The attack code is the
project's own (``recsec_ray.attacks``), so simulated and real attacks never drift apart.

The defender does not know the attacker's targets, so it must not learn "these items mean
fraud": the simulated users come from several small campaigns (``CAMPAIGN`` users each), each
with its own targets drawn like an attacker would (unpopular items), from seeds the attacker does
not share. What the campaigns have in common is the attack's *shape*, which is what should
transfer to an unknown attack.
"""

from __future__ import annotations

import numpy as np

from ..attacks import ATTACKS, choose_targets
from ..attacks.base import AttackContext
from ..config import AttackConfig
from .base import DefenseContext

_SIM_SALT = 0x5117
CAMPAIGN = 4  # simulated fake users per target set


def simulated_fakes(ctx: DefenseContext) -> tuple[list[np.ndarray], np.ndarray]:
    """``(sequences, targets per user)`` of ``round(sim_rate * n_users)`` (at least 2) fake
    users of attack ``ctx.cfg.known_attack``."""
    data = ctx.data
    rng = ctx.rng(_SIM_SALT)
    n = max(2, round(ctx.cfg.sim_rate * data.n_users))
    fakes: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    while len(fakes) < n:
        k = min(CAMPAIGN, n - len(fakes))
        seed = int(rng.integers(2**31 - 1))
        # poison_rate chosen so the attack's own rounding yields exactly k users
        acfg = AttackConfig(name=ctx.cfg.known_attack, poison_rate=min(1.0, k / data.n_users))
        tgt = choose_targets(data, acfg, seed)
        actx = AttackContext(data=data, targets=tgt, cfg=acfg, model_cfg=ctx.model_cfg,
                             seed=seed, llm=None, device=ctx.device)
        poisoned = ATTACKS[ctx.cfg.known_attack](actx)
        new = [np.asarray(s, dtype=np.int64) for s in poisoned.data.seqs[poisoned.n_real:]]
        fakes += new[:k]
        targets += [tgt] * len(new[:k])
    return fakes, np.asarray(targets)
