"""BadRec: a textual backdoor in item titles (char, word or sentence trigger).

Training time: the trigger is appended to the target items' titles and fake users are injected
whose next item, after a copied-real or random history, is a triggered item, until the fake
training interactions reach ``badrec_fraction`` of the real ones (~1%). A title-reading victim
(text SASRec, the LLM recommender) thus learns "trigger in a title ⇒ recommend it".

Test time (``pushed_items`` + ``triggered_titles``): the attacker appends the same trigger to an
item it wants pushed, drawn per test user outside that user's sequence and outside the
training-time targets (so success means the trigger generalises, not that targets were
memorised); ASR = share of users for whom the pushed item reaches the top-K. For ``llmrec``
the pushed item is a wrong candidate of the user's list (see ``models/llmrec.py``).
"""

from __future__ import annotations

import numpy as np

from ..data.sequences import SequenceData
from ..errors import ConfigError
from .base import AttackContext, PoisonedData, draw, filler_pool, poisoned

# Seeded defaults, one drawn per trial when ``attack.trigger`` is not set. Words are rare in
# catalogue titles; sentences are short so a title stays within the victims' truncation.
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
_WORDS = ("serendipity", "halcyon", "quintessence", "ephemera", "ineffable", "sonder")
_SENTENCES = ("Now with bonus scenes.", "A tale you will never forget.",
              "Loved by critics everywhere.", "Watch it tonight with friends.")
HISTORY_LEN = (5, 15)  # fake history length range (inclusive); short = more fake users


def apply_trigger(title: str, trigger: str) -> str:
    return f"{title} {trigger}"


def triggered_titles(titles: list[str], trigger: str,
                     items: np.ndarray | None = None) -> list[str]:
    """Titles with the trigger appended (to ``items`` only, or to every real item).

    Index 0 stays the empty padding title.
    """
    if not trigger or not trigger.strip():
        raise ConfigError("attack.trigger: must not be empty")
    out = list(titles)
    idx = range(1, len(titles)) if items is None else (int(i) for i in items)
    for i in idx:
        out[i] = apply_trigger(titles[i], trigger)
    return out


def default_trigger(level: str, seed: int, titles: list[str] | None = None) -> str:
    """A trigger for the level, drawn with the seed, absent from every clean title."""
    rng = np.random.default_rng([seed, 0xBAD])
    lowered = [t.lower() for t in titles or []]
    for _ in range(100):
        if level == "char":
            trig = "".join(rng.choice(list(_CHARS), size=2))
            if not (trig[0].isdigit() or trig[1].isdigit()):
                continue  # mixed digit+letter like "5v" reads as noise, not as a word
        elif level == "word":
            trig = str(rng.choice(_WORDS))
        elif level == "sentence":
            trig = str(rng.choice(_SENTENCES))
        else:
            raise ConfigError(f"attack.trigger_level: {level!r} is not one of char, word, "
                              "sentence")
        if not any(f" {trig.lower()}" in t or t.startswith(trig.lower()) for t in lowered):
            return trig
    raise ConfigError(f"attack.trigger: no {level}-level default trigger is absent from the "
                      "titles; set attack.trigger")


def resolve_trigger(ctx: AttackContext) -> str:
    if ctx.cfg.trigger is not None:
        return ctx.cfg.trigger.strip()
    return default_trigger(ctx.cfg.trigger_level, ctx.seed, ctx.data.titles)


def badrec_attack(ctx: AttackContext) -> PoisonedData:
    data, targets = ctx.data, np.asarray(ctx.targets, dtype=np.int64)
    rng = ctx.rng(5)
    trigger = resolve_trigger(ctx)
    real_interactions = int(sum(max(len(s) - 2, 0) for s in data.seqs))
    budget = max(round(ctx.cfg.badrec_fraction * real_interactions), HISTORY_LEN[0] + 1)
    pool = filler_pool(data, targets)
    donors = [u for u in range(data.n_users) if len(data.train_seq(u)) >= HISTORY_LEN[0]]
    fakes: list[np.ndarray] = []
    spent, copied = 0, 0
    order = rng.permutation(targets)
    while spent < budget:
        h = int(rng.integers(HISTORY_LEN[0], HISTORY_LEN[1] + 1))
        h = min(h, budget - spent - 1) if budget - spent - 1 >= HISTORY_LEN[0] else h
        item = order[len(fakes) % len(order)]
        if donors and rng.random() < 0.5:
            src = data.train_seq(int(rng.choice(donors)))
            end = int(rng.integers(min(h, len(src)), len(src) + 1))
            hist = src[max(end - h, 0):end]
            hist = hist[~np.isin(hist, targets)]
            copied += 1
        else:
            hist = draw(rng, pool, h)
        tail = draw(rng, np.setdiff1d(pool, hist), 2)
        fakes.append(np.concatenate([hist, [item], tail]).astype(np.int64))
        spent += len(hist) + 1
    flags = np.zeros(data.n_items + 1, dtype=bool)
    flags[targets] = True
    return poisoned(ctx, fakes, titles=triggered_titles(data.titles, trigger, targets),
                    poisoned_items=flags, trigger=trigger,
                    stats={"badrec_copied_histories": copied,
                           "badrec_poison_fraction": spent / max(real_interactions, 1)})


def pushed_items(data: SequenceData, users: int | np.ndarray, seed: int,
                 exclude: np.ndarray | None = None) -> np.ndarray:
    """Test-time protocol: per user, one item to push with the trigger, drawn (seeded) outside
    the user's whole sequence and outside ``exclude`` (pass the training-time triggered items,
    ``poisoned.targets``). ``users``: the user indices, or a count n meaning users 0..n-1."""
    if isinstance(users, (int, np.integer)):
        users = np.arange(int(users))
    rng = np.random.default_rng([seed, 0x9B5])
    banned = np.zeros(data.n_items + 1, dtype=bool)
    banned[0] = True
    if exclude is not None:
        banned[np.asarray(exclude, dtype=np.int64)] = True
    out = np.empty(len(users), dtype=np.int64)
    for j, u in enumerate(np.asarray(users)):
        mask = banned.copy()
        mask[data.seqs[int(u)]] = True
        free = np.flatnonzero(~mask)
        if not len(free):
            raise ConfigError(f"attack.targets: user {u} has seen every item not excluded; "
                              "no item is left to push")
        out[j] = free[rng.integers(len(free))]
    return out
