"""The defender's own fake users: a KNOWN attack simulated on the data it observes.

LLM4Dec and LoRec learn what a fraudster looks like from fake users the defender generates
itself (DESIGN §4). The defender cannot tell injected users from real ones, so it runs the known
attack (random or bandwagon) over the poisoned data as observed, with targets of its own
choosing (drawn like an attacker would, from a seed the attacker does not share). The attack
code is the project's own (``recsec_ray.attacks``), so simulated and real attacks never drift.
"""

from __future__ import annotations

import numpy as np

from ..attacks import ATTACKS, choose_targets
from ..attacks.base import AttackContext
from ..config import AttackConfig
from .base import DefenseContext

_SIM_SALT = 0x5117


def simulated_fakes(ctx: DefenseContext) -> tuple[list[np.ndarray], np.ndarray]:
    """``(sequences, defender_targets)`` of ``round(sim_rate * n_users)`` (at least 2) fake
    users of attack ``ctx.cfg.known_attack``."""
    data = ctx.data
    seed = int(ctx.rng(_SIM_SALT).integers(2**31 - 1))
    n = max(2, round(ctx.cfg.sim_rate * data.n_users))
    # poison_rate is chosen so the attack's own rounding yields exactly n users
    acfg = AttackConfig(name=ctx.cfg.known_attack, poison_rate=min(1.0, n / data.n_users))
    targets = choose_targets(data, acfg, seed)
    actx = AttackContext(data=data, targets=targets, cfg=acfg, model_cfg=ctx.model_cfg,
                         seed=seed, llm=None, device=ctx.device)
    poisoned = ATTACKS[ctx.cfg.known_attack](actx)
    fakes = [np.asarray(s, dtype=np.int64) for s in poisoned.data.seqs[poisoned.n_real:]]
    return fakes, targets
