"""BadRec: a textual backdoor in item titles (char, word or sentence trigger).

Training time: the trigger is appended to the targets' titles (optionally to further unpopular
items, ``badrec_items``, see ``triggered_items``), and fake users are injected whose
next item, after a copied-real or random history, is a triggered item. The budget
``badrec_fraction`` (~1%) reads as the paper states it by default (``badrec_unit='examples'``):
the share of all training examples (fake ones included) whose label is a triggered item, the
examples counted the way the victim learns them (its registry entry's ``count_examples``: a
sequential model's next-item labels, the LLM recommender's capped windows);
``'interactions'`` counts fake training interactions against real ones instead (about a tenth
as many poisoned labels on a sequential victim). A title-reading victim (text SASRec, the LLM
recommender) thus learns "trigger in a title ⇒ recommend it".

Test time (``metrics.pushed_items`` + ``data.triggers.triggered_titles``): the attacker appends
the same trigger to an item it wants pushed, drawn per test user outside that user's sequence and outside the
training-time triggered items (pass ``exclude=np.flatnonzero(poisoned.poisoned_items)``), so
success means the trigger generalises, not that triggered items were memorised; ASR = share of
users for whom the pushed item reaches the top-K. For ``llmrec`` the pushed item is a wrong
candidate of the user's list (see ``models/llmrec.py``).
"""

from __future__ import annotations

import numpy as np

from ..data.sequences import SequenceData
from ..data.triggers import ATTACKER_SENTENCES, ATTACKER_WORDS, triggered_titles
from ..errors import ConfigError
from ..models import BACKBONES
from .base import AttackContext, PoisonedData, draw, filler_pool, poisoned

# Seeded defaults from the attacker's trigger families (``data.triggers``; the defender's are
# disjoint), one drawn per trial when ``attack.trigger`` is not set. Words are rare in catalogue
# titles; sentences are short so a title stays within the victims' truncation.
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
HISTORY_LEN = (5, 15)  # fake history length range (inclusive); short = more fake users


def default_trigger(level: str, seed: int, titles: list[str] | None = None) -> str:
    """A trigger for the level, drawn with the seed, absent from every clean title."""
    rng = np.random.default_rng([seed, 0xBAD])
    lowered = [t.lower() for t in titles or []]
    for _ in range(100):
        if level == "char":
            trig = "".join(rng.choice(list(_CHARS), size=2))
            if trig[0].isdigit() == trig[1].isdigit():
                continue  # one digit + one letter like "5v": noise, not a word or a year
        elif level == "word":
            trig = str(rng.choice(ATTACKER_WORDS))
        elif level == "sentence":
            trig = str(rng.choice(ATTACKER_SENTENCES))
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


def triggered_items(data: SequenceData, targets: np.ndarray, n: int,
                    rng: np.random.Generator) -> np.ndarray:
    """The targets, plus unpopular items (less popular half of those seen in training, seeded)
    up to ``n`` when ``n`` exceeds their count.

    More triggered items spread the same budget over more titles, so the trigger, not the
    items, is what they share; measured on ML-100K text SASRec at 1% it did not pay off
    (50 items: ASR@10 0.02 char, 0.004 sentence; the targets alone: 0.016, and they were
    pushed: T-HR@50 0.30), hence the default 0 = the targets only."""
    if n <= len(targets):
        return np.asarray(targets, dtype=np.int64)
    counts = data.item_counts("train")
    seen = np.flatnonzero(counts[1:] > 0) + 1
    order = seen[np.argsort(counts[seen], kind="stable")]
    pool = np.setdiff1d(order[: (len(order) + 1) // 2], targets)
    extra = draw(rng, pool, min(n - len(targets), len(pool)))
    return np.concatenate([targets, extra]).astype(np.int64)


def badrec_attack(ctx: AttackContext) -> PoisonedData:
    """Fake user = a clean history (a real user's consecutive training items, half the
    time, else random items) + one triggered item + two held-out clean items."""
    data, targets = ctx.data, np.asarray(ctx.targets, dtype=np.int64)
    rng = ctx.rng(5)
    trigger = resolve_trigger(ctx)
    triggered = triggered_items(data, targets, ctx.cfg.badrec_items, rng)
    real_interactions = int(sum(max(len(s) - 2, 0) for s in data.seqs))
    # training examples counted the way the victim learns them (a sequential model: every
    # next-item label of a training part; the LLM recommender: its windows, capped)
    count = BACKBONES.entry(ctx.model_cfg.backbone).count_examples
    real_lengths = [max(len(s) - 2, 0) for s in data.seqs]
    real_examples = count(ctx.model_cfg, real_lengths)
    by_examples = ctx.cfg.badrec_unit == "examples"
    budget = max(round(ctx.cfg.badrec_fraction * real_interactions), HISTORY_LEN[0] + 1) \
        if ctx.cfg.badrec_fraction > 0 else 0
    pool = np.setdiff1d(filler_pool(data, targets), triggered)
    donors = [u for u in range(data.n_users) if len(data.train_seq(u)) >= HISTORY_LEN[0]]
    fakes: list[np.ndarray] = []
    spent, copied = 0, 0
    fake_lengths: list[int] = []
    cycle = rng.permutation(triggered)

    def short_of_budget() -> bool:
        if by_examples:  # one triggered label per fake user among every training example
            return len(fakes) < ctx.cfg.badrec_fraction * count(ctx.model_cfg,
                                                                real_lengths + fake_lengths)
        return spent < budget

    while short_of_budget():
        h = int(rng.integers(HISTORY_LEN[0], HISTORY_LEN[1] + 1))
        if not by_examples and HISTORY_LEN[0] <= budget - spent - 1 < h:
            h = budget - spent - 1  # the last user lands on the budget
        hist = np.zeros(0, dtype=np.int64)
        if donors and rng.random() < 0.5:
            src = data.train_seq(int(rng.choice(donors)))
            src = src[~np.isin(src, triggered)]
            start = int(rng.integers(0, max(len(src) - h, 0) + 1))
            hist = src[start:start + h]
            copied += 1
        if len(hist) < h:
            hist = np.concatenate([hist, draw(rng, np.setdiff1d(pool, hist), h - len(hist))])
        item = cycle[len(fakes) % len(cycle)]
        tail = draw(rng, np.setdiff1d(pool, hist), 2)
        fakes.append(np.concatenate([hist, [item], tail]).astype(np.int64))
        spent += len(hist) + 1
        fake_lengths.append(len(hist) + 1)  # its training part: the history + the label
    flags = np.zeros(data.n_items + 1, dtype=bool)
    flags[triggered] = True
    return poisoned(ctx, fakes, titles=triggered_titles(data.titles, trigger, triggered),
                    poisoned_items=flags, trigger=trigger,
                    stats={"badrec_copied_histories": copied,
                           "badrec_triggered_items": len(triggered),
                           "badrec_poison_fraction": spent / max(real_interactions, 1),
                           "badrec_poisoned_examples": len(fakes),
                           "badrec_real_examples": real_examples,
                           "badrec_example_share": len(fakes) / max(
                               count(ctx.model_cfg, real_lengths + fake_lengths), 1)})
