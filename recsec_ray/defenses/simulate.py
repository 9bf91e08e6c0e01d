"""The defender's own fake users: a KNOWN attack simulated on the data it observes.

LLM4Dec and LoRec learn what a fraudster looks like from fake users the defender generates
itself (DESIGN §4). The defender cannot tell injected users from real ones, so it runs the known
attack (random or bandwagon) over the poisoned data as observed. The job hands the defense the
project's own attack code as a callable (``ctx.simulate``), so simulated and real attacks never
drift apart and no defense imports the attacks.

The defender does not know the attacker's targets, so it must not learn "these items mean
fraud": the simulated users come from several small campaigns (``CAMPAIGN`` users each), each
with its own targets drawn like an attacker would (unpopular items), from seeds the attacker does
not share. What the campaigns have in common is the attack's *shape*, which is what should
transfer to an unknown attack.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .base import DefenseContext

_SIM_SALT = 0x5117
CAMPAIGN = 4  # simulated fake users per target set


def simulated_fakes(ctx: DefenseContext) -> tuple[list[np.ndarray], np.ndarray]:
    """``(sequences, targets per user)`` of ``round(sim_rate * n_users)`` (at least 2) fake
    users of attack ``ctx.cfg.known_attack``; users of one campaign share a target row
    (``campaigns`` numbers them)."""
    data = ctx.data
    if ctx.simulate is None:
        raise ConfigError(f"defense.known_attack: {ctx.cfg.known_attack!r} must be simulated, "
                          "but this defense context has no simulator (the job passes one)")
    rng = ctx.rng(_SIM_SALT)
    n = max(2, round(ctx.cfg.sim_rate * data.n_users))
    fakes: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    while len(fakes) < n:
        k = min(CAMPAIGN, n - len(fakes))
        seed = int(rng.integers(2**31 - 1))
        new, tgt = ctx.simulate(data, ctx.cfg.known_attack, k, seed)
        fakes += new
        targets += [tgt] * len(new)
    return fakes, np.asarray(targets)


def campaigns(targets: np.ndarray) -> np.ndarray:
    """Campaign number of each simulated user (users sharing a target set), so a held-out
    set can leave whole campaigns out: a classifier validated on users whose targets it
    trained on learns "these items mean fraud" and looks better than it is."""
    _, ids = np.unique(np.asarray(targets), axis=0, return_inverse=True)
    return ids.reshape(-1)
