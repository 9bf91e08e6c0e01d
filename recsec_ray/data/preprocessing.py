"""Raw interactions → time-ordered item sequences (DESIGN §3).

Order of steps, each vectorised over all rows:
1. implicit feedback: drop rows rated below ``min_rating`` (rows without a rating are kept);
2. drop items with no title (a text recommender cannot use them), count logged;
3. order each user's rows by timestamp, ties broken by ``tie_rule``: "file" (order in the
   source file), "item" (original item id), "random" (seeded by ``cfg.seed``); stable sort;
4. iterative k-core: drop users and items with fewer than ``k_core`` rows until none is left;
5. keep each user's last ``max_len + 3`` items (the reference keeps 53 for max length 50:
   the model sees 50 and two more are the valid and test targets);
6. drop users left with fewer than 3 items (train, valid and test each need one);
7. re-index: items that still occur become 1..n (original id order) with their titles, users
   0..m-1 (original id order). Items present only in the truncated past are dropped, since no
   model could learn them.
"""

from __future__ import annotations

import logging

import numpy as np

from ..config import DataConfig
from ..errors import ConfigError
from .raw import Interactions
from .sequences import SequenceData

log = logging.getLogger(__name__)

MIN_ITEMS = 3


def tie_keys(n: int, rule: str, item: np.ndarray, seed: int) -> np.ndarray:
    if rule == "file":
        return np.arange(n)
    if rule == "item":
        return item
    return np.random.default_rng(seed).random(n)


def k_core(user: np.ndarray, item: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of rows surviving iterative k-core on users and items."""
    keep = np.ones(len(user), dtype=bool)
    if k <= 1:
        return keep
    nu, ni = int(user.max()) + 1, int(item.max()) + 1
    while True:
        idx = np.flatnonzero(keep)
        uc = np.bincount(user[idx], minlength=nu)
        ic = np.bincount(item[idx], minlength=ni)
        bad = (uc[user[idx]] < k) | (ic[item[idx]] < k)
        if not bad.any():
            return keep
        keep[idx[bad]] = False


def last_n(user: np.ndarray, n: int) -> np.ndarray:
    """Mask keeping each user's last ``n`` rows; ``user`` must be sorted (grouped)."""
    if len(user) == 0:
        return np.ones(0, dtype=bool)
    counts = np.bincount(user)
    ends = np.cumsum(counts)
    return np.arange(len(user)) >= ends[user] - n


def preprocess(raw: Interactions, cfg: DataConfig, name: str) -> SequenceData:
    n = len(raw.ts)
    keep = np.ones(n, dtype=bool)
    if raw.rating is not None and cfg.min_rating > 0:
        keep &= ~(raw.rating < cfg.min_rating)
        log.info("%s: %d of %d rows rated >= %g", name, int(keep.sum()), n, cfg.min_rating)
    has_title = np.array([bool(t) for t in raw.titles], dtype=bool)
    untitled = keep & ~has_title[raw.item]
    if untitled.any():
        log.warning("%s: dropped %d rows of %d items without a title", name,
                    int(untitled.sum()), len(np.unique(raw.item[untitled])))
        keep &= ~untitled
    tie = tie_keys(n, cfg.tie_rule, raw.item, cfg.seed)
    order = np.lexsort((tie, raw.ts, raw.user))
    order = order[keep[order]]
    user, item, ts = raw.user[order], raw.item[order], raw.ts[order]

    core = k_core(user, item, cfg.k_core) if len(user) else np.ones(0, dtype=bool)
    user, item, ts = user[core], item[core], ts[core]
    tail = last_n(user, cfg.max_len + MIN_ITEMS)
    user, item, ts = user[tail], item[tail], ts[tail]
    if len(user):
        enough = np.bincount(user)[user] >= MIN_ITEMS
        user, item, ts = user[enough], item[enough], ts[enough]
    if len(user) == 0:
        raise ConfigError(f"data.k_core: no user keeps {MIN_ITEMS}+ items after "
                          f"{cfg.k_core}-core filtering of {name}; lower data.k_core or "
                          "data.min_rating")

    items_kept, item_new = np.unique(item, return_inverse=True)
    users_kept, user_new = np.unique(user, return_inverse=True)
    ends = np.cumsum(np.bincount(user_new))
    seqs = np.split((item_new + 1).astype(np.int64), ends[:-1])
    tied = ts[ends - 1] == ts[ends - 2]  # every user has >= 3 rows
    meta = {"dataset": name, "tie_rule": cfg.tie_rule, "n_users": len(seqs),
            "tie_users": int(tied.sum()), "tie_share": float(tied.mean())}
    if cfg.tie_rule == "random":
        meta["tie_seed"] = cfg.seed
    return SequenceData(
        name=name, seqs=seqs,
        titles=[""] + [raw.titles[i] or "" for i in items_kept.tolist()],
        user_ids=[raw.user_ids[u] for u in users_kept.tolist()],
        item_ids=[""] + [raw.item_ids[i] for i in items_kept.tolist()],
        meta=meta)
