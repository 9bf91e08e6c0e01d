"""LLM attack: fake histories the LLM chooses, title by title, for personas; targets included.

A small offline model cannot write a usable history as free text (SmolLM2-135M ran its number
lists past the catalogue and every fake user fell back to random fill), but it can *choose*:
each next item of a persona's history is the candidate, among ``CHOICES`` real catalogue titles
(half popular, half random), that the LLM scores highest after the persona and the history so
far (``prompts.persona_choice_prompt``; one batched ``score`` call through the shared service
per step, over every fake user). So the history is plausible to the model by construction, and
every item is real.

A small model prefers some answer letters whatever the options (it said " A" far more often
than " J"), so the scores are calibrated before the choice (Zhao et al., ICML'21, "Calibrate
before use"): each letter's mean log-probability over the step's prompts is subtracted, and the
pick is the candidate the LLM prefers beyond its letter prior. The targets a fake user carries
(``base.target_slots``) are then placed at random positions of its training part.
``stats['llm_chosen_share']`` is the share of non-target items the LLM chose (the rest, only if
a score came back unusable, are random fill counted in ``llm_fallbacks``): the honest measure
of how LLM-written the fake users are.
"""

from __future__ import annotations

import numpy as np

from ..data.registry import catalogue_words
from ..errors import ConfigError
from .base import (
    AttackContext,
    PoisonedData,
    body_length,
    draw,
    filler_pool,
    n_fake_users,
    poisoned,
    popular_items,
    sample_lengths,
    target_slots,
)

PERSONAS = ("a college student", "a retired teacher", "a busy parent of two",
            "a software engineer", "a teenager", "a nurse who works night shifts",
            "a small-business owner", "a history graduate student", "a long-haul truck driver",
            "an art collector")
MAX_PICKS = 20  # items the LLM chooses per fake user: prompts stay short on a CPU service
CHOICES = 10  # candidates per choice
SHOWN_HISTORY = 5  # most recent chosen titles in each prompt


def calibrated_choice(logp: np.ndarray) -> np.ndarray:
    """Per row, the candidate whose log-probability most exceeds its letter's mean over the
    rows (the letter prior); ties: the earlier candidate. Non-finite rows give -1."""
    s = np.asarray(logp, dtype=np.float64)
    ok = np.isfinite(s).all(1)
    if not ok.any():
        return np.full(len(s), -1)
    prior = s[ok].mean(0)
    pick = np.argmax(s - prior, axis=1)
    return np.where(ok, pick, -1)


def place_targets(picks: list[int], targets: np.ndarray, rng: np.random.Generator
                  ) -> np.ndarray:
    """The LLM's order, each target inserted at a random place of the training part
    (``seq[:-2]``): the last two items stay the LLM's."""
    body, tail = list(picks[:-2]), list(picks[-2:])
    for t in rng.permutation(targets):
        body.insert(int(rng.integers(0, len(body) + 1)), int(t))
    return np.asarray(body + tail, dtype=np.int64)


def llm_attack(ctx: AttackContext) -> PoisonedData:
    from ..llm.prompts import choice_labels, persona_choice_prompt

    if ctx.llm is None:
        raise ConfigError("attack.name: 'llm' needs an LLM client (llm section of the config)")
    data, targets = ctx.data, np.asarray(ctx.targets, dtype=np.int64)
    rng = ctx.rng(4)
    n = n_fake_users(ctx)
    popular = popular_items(data, 300, exclude=targets)
    pool = filler_pool(data, targets)
    domain = catalogue_words(data.name).domain
    slots = [target_slots(ctx, u) for u in range(n)]
    # two more than the training part needs: the held-out valid/test slots
    want = [min(body_length(length, len(s)) - len(s), MAX_PICKS) + 2
            for length, s in zip(sample_lengths(data, n, rng), slots, strict=True)]
    personas = [PERSONAS[int(rng.integers(len(PERSONAS)))] for _ in range(n)]
    chosen: list[list[int]] = [[] for _ in range(n)]
    labels = choice_labels(CHOICES)
    fallbacks = 0
    for step in range(max(want, default=0)):
        users = [u for u in range(n) if len(chosen[u]) < want[u]]
        offers = []
        for u in users:
            free = np.setdiff1d(pool, chosen[u])
            half = CHOICES // 2
            pop = np.setdiff1d(popular, chosen[u])
            shown = draw(rng, pop, min(half, len(pop)))
            shown = np.concatenate([shown, draw(rng, np.setdiff1d(free, shown),
                                                CHOICES - len(shown))])
            offers.append(rng.permutation(shown))
        prompts = [persona_choice_prompt(domain, personas[u],
                                         [data.titles[i] for i in chosen[u][-SHOWN_HISTORY:]],
                                         [data.titles[i] for i in offer])
                   for u, offer in zip(users, offers, strict=True)]
        logp = np.asarray(ctx.llm.score(prompts, labels), dtype=np.float64)
        picks = calibrated_choice(logp) if logp.shape == (len(users), CHOICES) else \
            np.full(len(users), -1)
        for u, offer, j in zip(users, offers, picks, strict=True):
            if j < 0:  # an unusable answer: a random candidate, counted
                fallbacks += 1
                j = int(rng.integers(CHOICES))
            chosen[u].append(int(offer[j]))
    fakes = [place_targets(chosen[u], slots[u], rng) for u in range(n)]
    total = sum(want)
    return poisoned(ctx, fakes, stats={"llm_fallbacks": fallbacks,
                                       "llm_chosen_share": 1 - fallbacks / max(total, 1),
                                       "llm_choice_steps": max(want, default=0)})
