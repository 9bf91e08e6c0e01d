"""P-Scanner's trigger-augmentation agent: diverse synthetic triggers at three levels.

The scanner never sees the attacker's trigger, so it learns the *concept* from many made-up
ones. The LLM writes them (``generate`` through the shared client), prompted with the domain
and quoted example titles, and in later rounds with the triggers the scanner missed. Its output
is untrusted text: each line is stripped of list markers and quotes, then validated per level:

- ``char``: 1-4 printable non-space characters mixing letters and digits or symbols;
- ``word``: one alphabetic token of 3-16 letters;
- ``sentence``: 3-12 words, at most 80 characters;

and rejected if it is already part of ordinary title vocabulary (a whole word or phrase of some
clean title; a real catalogue word would teach the scanner to flag clean titles), a duplicate
(case-insensitive), or in the attacker's trigger family (``data.triggers.attacker_family``:
the scanner must meet the attack's kind of trigger unseen). A small model often writes too few
valid lines, so a documented programmatic fallback fills the rest from the defender's families:
letter/symbol pairs (char), pronounceable made-up words (word), and edition notes from fixed
templates (sentence). ``stats`` records how many came
from each source, so the LLM's real share is never hidden.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..data.triggers import DEFENDER_SYMBOLS, attacker_family
from ..llm.prompts import parse_trigger_list, trigger_agent_prompt

if TYPE_CHECKING:
    from ..llm.client import LLMClient

LEVELS = ("char", "word", "sentence")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_ONSETS = ("b", "br", "c", "cl", "d", "dr", "f", "fl", "g", "gr", "k", "l", "m", "n", "p",
           "pl", "qu", "r", "s", "st", "t", "tr", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "ea", "io", "ou")
_CODAS = ("", "n", "r", "s", "x", "th", "nd", "sk", "m", "l")
# edition / format notes: the defender's sentence family (the attacker's endorses the item)
_TREATMENTS = ("Remastered", "Restored", "Digitally restored", "Newly remastered", "Reissued",
               "Presented")
_FORMATS = ("in widescreen", "in high definition", "with the original mono sound",
            "from the original negative", "as a collector's edition", "with restored colour")
_RELEASES = ("for home viewing.", "for this release.", "for collectors.", "in a limited run.",
             "on two discs.", "with new subtitles.")
_EXTRAS = ("a printed booklet", "the original trailer", "an archival interview",
           "deleted storyboards", "a restoration essay", "alternate cover art")


def valid_trigger(text: str, level: str) -> bool:
    if not text or not text.isprintable() or not text.isascii():
        return False
    if level == "char":
        return (1 <= len(text) <= 4 and " " not in text
                and not text.isalpha() and not text.isdigit())
    if level == "word":
        return 3 <= len(text) <= 16 and text.isalpha()
    if level == "sentence":
        words = text.split()
        return 3 <= len(words) <= 12 and len(text) <= 80 and any(c.isalpha() for c in text)
    raise ValueError(f"trigger level {level!r} is not one of {', '.join(LEVELS)}")


class Vocabulary:
    """Whole words and word sequences of clean titles, to reject triggers that are ordinary."""

    def __init__(self, titles: list[str]):
        self.words = {w for t in titles for w in re.findall(r"[a-z0-9']+", t.lower())}
        self.padded = [f" {' '.join(re.findall(r'[a-z0-9]+', t.lower()))} " for t in titles]

    def ordinary(self, trigger: str, level: str) -> bool:
        low = trigger.lower()
        if level in ("char", "word"):
            return low in self.words
        key = f" {' '.join(re.findall(r'[a-z0-9]+', low))} "
        return any(key in t for t in self.padded)


def fallback_trigger(level: str, rng: np.random.Generator) -> str:
    """The programmatic generator used when the LLM writes too few valid triggers; it draws
    from the defender's families (``data.triggers``): a letter next to a symbol, optionally
    one more letter (char); a pronounceable made-up word (word); an edition note (sentence)."""
    if level == "char":
        a = str(rng.choice(list(_LETTERS)))
        b = str(rng.choice(list(DEFENDER_SYMBOLS)))
        pair = [a, b] if rng.random() < 0.5 else [b, a]
        if rng.random() < 0.3:
            pair.append(str(rng.choice(list(_LETTERS))))
        return "".join(pair)
    if level == "word":
        n = int(rng.integers(2, 4))
        return "".join(str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS))
                       + str(rng.choice(_CODAS)) for _ in range(n))
    if rng.random() < 0.5:
        return f"Includes {rng.choice(_EXTRAS)}."
    return f"{rng.choice(_TREATMENTS)} {rng.choice(_FORMATS)} {rng.choice(_RELEASES)}"


@dataclass
class TriggerAgent:
    llm: LLMClient | None
    model: str | None
    domain: str
    clean_titles: list[str]
    seed: int
    max_tokens: int = 96
    stats: dict[str, int] = field(default_factory=lambda: {"from_llm": 0, "from_fallback": 0,
                                                            "rejected": 0, "llm_calls": 0})
    seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.vocab = Vocabulary(self.clean_titles)
        self.rng = np.random.default_rng([self.seed, 0x7216])

    def _accept(self, text: str, level: str) -> bool:
        key = text.lower()
        if key in self.seen or not valid_trigger(text, level) \
                or self.vocab.ordinary(text, level) or attacker_family(text):
            return False
        self.seen.add(key)
        return True

    def propose(self, n: int, missed: dict[str, list[str]] | None = None,
                round_no: int = 0) -> list[tuple[str, str]]:
        """``n`` new (level, trigger) pairs spread over the three levels."""
        out: list[tuple[str, str]] = []
        per_level = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]
        for level, want in zip(LEVELS, per_level, strict=True):
            got = self._from_llm(level, want, (missed or {}).get(level, []), round_no)
            out += [(level, t) for t in got]
            tries = 0
            while len(got) < want and tries < 50 * want:
                t = fallback_trigger(level, self.rng)
                tries += 1
                if self._accept(t, level):
                    got.append(t)
                    out.append((level, t))
                    self.stats["from_fallback"] += 1
        return out

    def _from_llm(self, level: str, want: int, missed: list[str], round_no: int) -> list[str]:
        if self.llm is None or want == 0:
            return []
        k = min(6, len(self.clean_titles))
        examples = [self.clean_titles[i] for i in
                    self.rng.choice(len(self.clean_titles), size=k, replace=False)]
        prompt = trigger_agent_prompt(self.domain, examples, level, want, seeds=missed[:6])
        seed = int(self.rng.integers(2**31 - 1))
        texts = self.llm.generate([prompt], max_tokens=self.max_tokens, temperature=0.9,
                                  seed=seed + round_no, model=self.model)
        self.stats["llm_calls"] += 1
        got: list[str] = []
        for raw in parse_trigger_list(texts[0] if texts else ""):
            line = re.sub(r"\s+", " ", raw)
            if len(got) < want and self._accept(line, level):
                got.append(line)
                self.stats["from_llm"] += 1
            else:
                self.stats["rejected"] += 1
        return got
