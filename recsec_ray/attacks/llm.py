"""LLM attack: the LLM writes plausible fake histories for personas, containing the targets.

Per fake user the LLM sees a persona and a numbered, quoted sample of real catalogue titles
(half popular, half random, the targets among them) and answers with the numbers of the items
that user would have consumed, in order, including the targets (``prompts.persona_prompt``).
Only numbers are parsed, so every item is real by construction; out-of-range numbers, repeats
and junk are dropped. The LLM's order is kept; a target it left out, or put in the two
held-out slots the trainer never learns from, is inserted at a random place of the training
part, so every fake user holds every target whatever the model writes.

The answer is prefilled with one random catalogue number (the "opener"), since a small model
continues a started list far more readily than it starts one. An answer the model botches
(fewer than half the asked items usable, the opener not counted) is replaced by a random fill
from the same catalogue sample and counted in ``stats['llm_fallbacks']``; a short but usable
answer is topped up at random, counted in ``stats['llm_padded_items']``. These counts are the
honest measure of how LLM-written the fake users are: SmolLM2-135M, the offline default, ran
its lists past the catalogue's numbers and fell back on 4 of 4 ML-100K users in a smoke run.
"""

from __future__ import annotations

import numpy as np

from ..data.registry import catalogue_words
from ..errors import ConfigError, ModelOutputError
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
MAX_PICKS = 20  # non-target items asked per user: short prompts on a CPU service (DESIGN §5)
TITLE_CHARS = 60


def parse_picks(text: object, catalogue: np.ndarray, k: int) -> list[int]:
    """Item indices the answer names by catalogue number (1-based), valid and distinct."""
    from ..llm.prompts import parse_item_numbers

    return [int(catalogue[v - 1]) for v in parse_item_numbers(text, len(catalogue), k)]


def place_targets(picks: list[int], targets: np.ndarray, rng: np.random.Generator
                  ) -> np.ndarray:
    """The LLM's order, with every target inside the training part (``seq[:-2]``)."""
    tset = {int(t) for t in targets}
    fillers = [i for i in picks if i not in tset]
    body, tail = fillers[:-2], fillers[-2:]
    llm_pos = {i: j for j, i in enumerate(picks) if i in tset}
    for t in rng.permutation(targets):
        t = int(t)
        if t in llm_pos and llm_pos[t] < len(picks) - 2:
            at = min(max(llm_pos[t], 1), len(body))
        else:
            at = int(rng.integers(1, len(body) + 1))
        body.insert(at, t)
    return np.asarray(body + tail, dtype=np.int64)


def llm_attack(ctx: AttackContext) -> PoisonedData:
    from ..llm.prompts import persona_prompt

    if ctx.llm is None:
        raise ConfigError("attack.name: 'llm' needs an LLM client (llm section of the config)")
    data, targets = ctx.data, np.asarray(ctx.targets, dtype=np.int64)
    rng = ctx.rng(4)
    n = n_fake_users(ctx)
    popular = popular_items(data, 300, exclude=targets)
    pool = filler_pool(data, targets)
    plans = []
    for user, length in enumerate(sample_lengths(data, n, rng)):
        slots = target_slots(ctx, user)
        k = min(body_length(length, len(slots)) - len(slots), MAX_PICKS) + 2
        m = min(2 * k + 10, len(pool))
        half = min(m // 2, len(popular))
        shown = draw(rng, popular, half)
        shown = np.concatenate([shown, draw(rng, np.setdiff1d(pool, shown), m - half)])
        mine = np.unique(slots)  # the targets this fake user carries
        catalogue = rng.permutation(np.concatenate([shown, mine]))
        number = {int(i): j + 1 for j, i in enumerate(catalogue)}
        prompt = persona_prompt(
            catalogue_words(data.name).domain, [(j + 1, _short(data.titles[i])) for j, i in
                                   enumerate(catalogue)],
            [(number[int(t)], _short(data.titles[t])) for t in mine], k + len(mine),
            persona=PERSONAS[int(rng.integers(len(PERSONAS)))])
        # Prefill the answer with one random non-target number: a small model continues a
        # started comma list far more often than it starts one (measured: SmolLM2-135M
        # answered a lone number to every unprimed prompt).
        opener = f" {number[int(rng.choice(shown))]},"
        plans.append((k, catalogue, prompt + opener, opener, slots))
    answers = ctx.llm.generate([p for _, _, p, _, _ in plans], max_tokens=4 * (MAX_PICKS + 8) + 16,
                               temperature=0.7, seed=ctx.seed) if plans else []
    if len(answers) != len(plans):
        raise ModelOutputError(f"llm attack: the service answered {len(answers)} of "
                               f"{len(plans)} prompts")
    fakes, fallbacks, padded, written = [], 0, 0, 0
    tset = set(targets.tolist())
    for (k, catalogue, _, opener, slots), answer in zip(plans, answers):
        text = answer if isinstance(answer, str) else ""
        picks = parse_picks(opener + text, catalogue, k + len(np.unique(slots)))
        n_fill = sum(1 for i in picks if i not in tset)
        fill_pool = np.setdiff1d(catalogue, targets)
        if n_fill - 1 < max(k // 2, 1):  # the opener is ours, not the model's
            fallbacks += 1
            picks = [int(i) for i in draw(rng, fill_pool, k)]
        else:
            written += n_fill - 1
            if n_fill < k:
                extra = draw(rng, np.setdiff1d(fill_pool, picks), k - n_fill)
                padded += len(extra)
                picks += [int(i) for i in extra]
        fakes.append(place_targets(picks, slots, rng))
    return poisoned(ctx, fakes, stats={"llm_fallbacks": fallbacks, "llm_padded_items": padded,
                                       "llm_items_written": written})


def _short(title: str) -> str:
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"
