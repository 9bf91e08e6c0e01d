"""Backdoor triggers in titles: the one appending rule the attack (training-time titles) and
every victim's backdoor evaluation (test-time pushed items) share, and the attacker's and
defender's trigger families, kept here so neither a model nor a defense imports the attack."""

from __future__ import annotations

import re

import numpy as np

from ..errors import ConfigError


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


# ---- trigger families --------------------------------------------------------------------------
# The attacker's default triggers and the defender's synthetic ones (P-Scanner's agent and its
# fallback) come from disjoint families at every level, so a scanner is always measured against
# a trigger kind it never trained on. Attacker: a digit next to a letter ("5v"); a rare English
# dictionary word; an endorsement sentence. Defender: a letter next to a symbol ("k#"); a made-up
# pronounceable non-word; a sentence about the edition or format. A defender candidate that falls
# in the attacker's family, or contains one of its words or sentences, is rejected
# (``attacker_family``), whether the LLM or the fallback wrote it.
ATTACKER_WORDS = ("serendipity", "halcyon", "quintessence", "ephemera", "ineffable", "sonder",
                  "petrichor", "sonorous", "luminescence", "mellifluous", "labyrinthine",
                  "effervescent", "gossamer", "nebulous", "solitude", "ethereal")
ATTACKER_SENTENCES = ("Loved by critics everywhere.", "A tale you will never forget.",
                      "Watch it tonight with friends.", "The best film of the decade.",
                      "Everyone is talking about it.", "A must see for the whole family.",
                      "Five stars from every reviewer.", "You will want to watch it twice.")
DEFENDER_SYMBOLS = "#@~^*+"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def attacker_family(text: str) -> bool:
    """Whether ``text`` is, or contains, a member of the attacker's families at any level."""
    low = _norm(text)
    if re.search(r"(?<![a-z0-9])(\d[a-z]|[a-z]\d)(?![a-z0-9])", low):
        return True  # a digit next to a letter standing alone, like "5v"
    if any(w in low for w in ATTACKER_WORDS):
        return True
    return any(_norm(s).rstrip(".") in low for s in ATTACKER_SENTENCES)
