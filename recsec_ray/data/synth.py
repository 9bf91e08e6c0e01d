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
