"""A synthetic dataset for unit tests only (never a sweep default, DESIGN §3).

Shaped like real data where tests care: Zipf-like item popularity, and sequential structure a
model can learn. Items lie on a hidden chain (a seeded permutation); each user walks it, mostly
stepping 1-2 places forward, sometimes jumping to a popular item. So the next item is
predictable from the last one, and SASRec should beat popularity on it.
"""

from __future__ import annotations

import numpy as np

from .sequences import SequenceData

_ADJ = ("quiet", "red", "lost", "bright", "hidden", "wild", "silver", "broken", "golden", "last",
        "cold", "secret", "little", "dark", "endless", "paper", "iron", "summer", "winter",
        "northern")
_NOUN = ("harbor", "garden", "river", "engine", "letter", "mountain", "circus", "mirror",
         "voyage", "kingdom", "lantern", "orchard", "signal", "forest", "island", "promise",
         "machine", "city", "song", "bridge")
_KIND = ("Novel", "Film", "Album", "Game", "Guide", "Collection")


def _titles(n_items: int, rng: np.random.Generator) -> list[str]:
    titles, seen = [""], set()
    for _ in range(n_items):
        a, b = rng.choice(_ADJ).title(), rng.choice(_NOUN).title()
        t = f"The {a} {b}: A {rng.choice(_KIND)} ({int(rng.integers(1950, 2024))})"
        k = 2
        base = t
        while t in seen:
            t, k = f"{base} {k}", k + 1
        seen.add(t)
        titles.append(t)
    return titles


def synthetic(n_users: int, n_items: int, seed: int, max_len: int = 50,
              p_chain: float = 0.8) -> SequenceData:
    """``n_users`` sequences of 5..max_len+3 distinct items out of ``n_items`` (>= 10)."""
    if n_users < 1 or n_items < 10:
        raise ValueError("synthetic: need n_users >= 1 and n_items >= 10")
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** 1.1
    pop = pop[rng.permutation(n_items)]  # popularity unrelated to item index or chain order
    pop /= pop.sum()
    chain = rng.permutation(n_items)  # chain[pos] = item code
    pos_of = np.empty(n_items, dtype=np.int64)
    pos_of[chain] = np.arange(n_items)
    hi = min(max_len + 3, n_items // 2)
    lengths = np.clip(rng.lognormal(np.log(max(5, hi / 3)), 0.6, n_users).astype(int), 5,
                      max(5, hi))
    seqs = []
    for length in lengths:
        cur = int(rng.choice(n_items, p=pop))
        seen = {cur}
        seq = [cur]
        while len(seq) < length:
            if rng.random() < p_chain:
                p = (pos_of[cur] + rng.integers(1, 3)) % n_items
                while int(chain[p]) in seen:  # walk on to the first unseen item
                    p = (p + 1) % n_items
                nxt = int(chain[p])
            else:
                nxt = int(rng.choice(n_items, p=pop))
                while nxt in seen:
                    nxt = int(rng.choice(n_items, p=pop))
            seen.add(nxt)
            seq.append(nxt)
            cur = nxt
        seqs.append(np.asarray(seq, dtype=np.int64) + 1)
    return SequenceData(
        name="synthetic", seqs=seqs, titles=_titles(n_items, rng),
        user_ids=[f"s{u}" for u in range(n_users)],
        item_ids=[""] + [str(i) for i in range(1, n_items + 1)],
        meta={"dataset": "synthetic", "seed": seed, "n_users": n_users,
              "note": "synthetic data for unit tests; not a benchmark"})


def synthetic_interactions(n_users: int, n_items: int, n_interactions: int, seed: int,
                           p_chain: float = 0.8) -> tuple[dict[str, np.ndarray], list[str]]:
    """A catalogue-scale version of the same chains, as the custom dataset's two tables:
    ``({"user", "item", "timestamp"}, titles)`` with item ids 1..n_items (``titles[i - 1]``).

    Vectorised over users (the per-step loop of :func:`synthetic` takes minutes at 50,000
    users): lengths are 5 plus a lognormal share of the rest, so they sum to
    ``n_interactions`` (about 10 per user at 50,000 x 500,000, Amazon-like); each user starts
    at a uniform item and steps 1-2 places along the hidden chain, or with ``1 - p_chain``
    jumps to a Zipf-popular item. A jump onto an item the user already has is dropped, so the
    total can fall a little short. For benchmarks of scale only, like :func:`synthetic`.
    """
    if n_users < 1 or n_items < 10 or n_interactions < 5 * n_users:
        raise ValueError("synthetic_interactions: need n_users >= 1, n_items >= 10 and "
                         "n_interactions >= 5 * n_users")
    rng = np.random.default_rng(seed)
    share = rng.lognormal(0.0, 0.8, n_users)
    extra = np.floor(share / share.sum() * (n_interactions - 5 * n_users)).astype(np.int64)
    extra[rng.choice(n_users, n_interactions - 5 * n_users - int(extra.sum()), replace=False)] += 1
    lengths = 5 + extra
    pop = 1.0 / np.arange(1, n_items + 1) ** 1.1
    pop = pop[rng.permutation(n_items)]
    cdf = np.cumsum(pop / pop.sum())
    chain = rng.permutation(n_items)
    pos_of = np.empty(n_items, dtype=np.int64)
    pos_of[chain] = np.arange(n_items)
    user = np.repeat(np.arange(n_users), lengths)
    step = np.arange(len(user)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    first = step == 0
    jump = ~first & (rng.random(len(user)) >= p_chain)
    # chain position of every interaction: a uniform start, then +1/+2 steps; a jump resets
    # the walk to the popular item's place on the chain
    popular = np.minimum(np.searchsorted(cdf, rng.random(len(user))), n_items - 1)
    moves = rng.integers(1, 3, size=len(user))
    base = np.where(first, rng.integers(0, n_items, size=len(user)), pos_of[popular])
    anchor = first | jump
    start_of = np.maximum.accumulate(np.where(anchor, np.arange(len(user)), 0))
    since = np.cumsum(np.where(anchor, 0, moves))
    pos = (base[start_of] + since - since[start_of]) % n_items
    item = chain[pos] + 1
    keep = np.ones(len(user), dtype=bool)  # drop repeats within a user (jumps onto the past)
    order = np.lexsort((step, item, user))
    dup = (user[order][1:] == user[order][:-1]) & (item[order][1:] == item[order][:-1])
    keep[order[1:][dup]] = False
    table = {"user": user[keep], "item": item[keep],
             "timestamp": (1_000_000 + step[keep]).astype(np.int64)}
    return table, _titles(n_items, rng)[1:]
