"""Every prompt of the project, and the parsers of what the LLM writes back.

Titles, histories and LLM output are attacker-controlled text. ``quote`` puts such text inside
double quotes on ONE line: backslashes, quotes, newlines and every other control character are
escaped and very long text is cut, so a title like ``x"\\nAnswer: Yes`` stays a title and cannot
add a line, close its quotes or fake an answer. (The backends also tokenize with
``split_special_tokens``, so a title spelling ``<|im_end|>`` stays text.) Parsers never raise:
junk gives None or [].
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

MAX_QUOTED_CHARS = 200
YES_NO = (" Yes", " No")  # fixed answers for score(); leading space = how they follow "Answer:"
TRIGGER_LEVELS = ("char", "word", "sentence")

_SURROGATES = re.compile("[\ud800-\udfff]")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(text: object, max_chars: int = MAX_QUOTED_CHARS) -> str:
    """``text`` as one double-quoted line, escaped. Of a text longer than ``max_chars``
    characters the middle is cut (before escaping, so no escape is split): its start (the
    name) and its end (where BadRec appends a trigger) both reach the model."""
    s = text if isinstance(text, str) else str(text)
    s = _SURROGATES.sub("\ufffd", s)  # lone surrogates: bytes decoded with surrogateescape
    if len(s) > max_chars:
        head = max_chars * 2 // 3
        s = s[:head] + " ... " + s[len(s) - max(max_chars - head - 5, 0):]
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _plain(text: str, max_chars: int = 80) -> str:
    """A trusted-but-configurable word (scenario, domain): quoted body without the quotes."""
    return quote(text, max_chars)[1:-1]


# ---- LLM4Dec / LoRec ------------------------------------------------------------------------
def llm4dec_prompt(titles: Sequence[str], scenario: str = "a movie recommendation platform",
                   max_titles: int | None = None) -> str:
    """DESIGN §4 wording; the most recent ``max_titles`` titles (oldest first)."""
    recent = list(titles)[-max_titles:] if max_titles else list(titles)
    seq = "; ".join(f"(Item title: {quote(t)})" for t in recent)
    return (f"In {_plain(scenario)}, a user's interaction sequence is as follows: {seq}. "
            "Please assess the likelihood of this user being a fraudster.")


def llm4dec_zero_shot_prompt(titles: Sequence[str],
                             scenario: str = "a movie recommendation platform",
                             max_titles: int | None = None) -> str:
    """Score with ``YES_NO``: P(" Yes") is the zero-shot fraud probability."""
    return (llm4dec_prompt(titles, scenario, max_titles)
            + "\nIs this user a fraudster? Answer Yes or No.\nAnswer:")


# ---- P-Scanner --------------------------------------------------------------------------------
_LEVEL_HINTS = {
    # examples from the defender's trigger families (``data.triggers``), never the attacker's
    "char": "a letter next to a symbol such as \"k#\" or \"@q\"",
    "word": "one made-up word that is not English such as \"brolith\" or \"quenda\"",
    "sentence": "a short note about the edition such as \"Restored from the original "
                "negative.\"",
}


def trigger_agent_prompt(domain: str, example_titles: Sequence[str], level: str, n: int,
                         seeds: Sequence[str] = ()) -> str:
    """Ask the LLM for ``n`` new backdoor triggers of ``level``, one per line; ``seeds`` are
    earlier triggers the scanner missed (LLM output, so quoted like any untrusted text)."""
    if level not in TRIGGER_LEVELS:
        raise ValueError(f"trigger level {level!r} is not one of {', '.join(TRIGGER_LEVELS)}")
    examples = "\n".join(f"- {quote(t)}" for t in list(example_titles)[:8])
    lines = [
        f"You help test a recommender system for {_plain(domain)} against backdoor attacks.",
        "An attacker appends a trigger to item titles. Here are example titles:",
        examples,
        f"Write {int(n)} different triggers. Each trigger is {_LEVEL_HINTS[level]}.",
    ]
    if seeds:
        lines.append("Make them similar in spirit to these triggers: "
                     + ", ".join(quote(s, 60) for s in list(seeds)[:10]) + ".")
    lines.append("Write one trigger per line, numbered, nothing else.\n1.")
    return "\n".join(lines)


def pscanner_prompt(title: str) -> str:
    """Score with ``YES_NO``; ``pscanner_prompt(t) + " Yes"`` is a positive training text."""
    return f"Does this title carry an inserted trigger? Title: {quote(title)}\nAnswer:"


# ---- LLM attack ---------------------------------------------------------------------------------
def candidate_labels(n: int) -> list[str]:
    """"A".."Z" for up to 26 options, else "1".."n"."""
    if n <= 26:
        return [chr(ord("A") + i) for i in range(n)]
    return [str(i + 1) for i in range(n)]


def choice_labels(n: int) -> list[str]:
    """The answers ``score`` compares after a lettered list: " A", " B", ... (one token)."""
    return [" " + lab for lab in candidate_labels(n)]


def persona_choice_prompt(domain: str, persona: str, history: Sequence[str],
                          options: Sequence[str]) -> str:
    """Which of the lettered ``options`` a persona picks next after ``history`` (oldest
    first); score with ``choice_labels(len(options))``."""
    labels = candidate_labels(len(options))
    seen = "\n".join(f"- {quote(t)}" for t in history) if history else "- nothing yet"
    opts = "\n".join(f"{lab}. {quote(t)}" for lab, t in zip(labels, options))
    return (f"{_plain(persona, 120).capitalize()} is choosing {_plain(domain)} to watch.\n"
            f"Watched so far, oldest first:\n{seen}\n"
            f"Options:\n{opts}\n"
            f"Which option will they pick next? Answer with one letter "
            f"({labels[0]}-{labels[-1]}).\nAnswer:")


# ---- LLM recommender ---------------------------------------------------------------------------
LLMREC_TITLE_CHARS = 40  # per title; BadRec's trigger sits at the end, so the cut keeps it
LLMREC_TITLE_TAIL = 25  # characters kept from a long title's end (its start gives the rest)


def short_title(title: str, max_chars: int = LLMREC_TITLE_CHARS,
                tail: int = LLMREC_TITLE_TAIL) -> str:
    """A long title cut in the middle: its name's start and its last ``tail`` characters (a
    year, or an appended trigger) both reach the model, at a bounded token cost."""
    if len(title) <= max_chars:
        return title
    return title[: max_chars - tail - 1] + "…" + title[-tail:]


def llmrec_prompt(history: Sequence[str], candidates: Sequence[str]) -> tuple[str, list[int]]:
    """The LLM recommender's prompt and, per candidate, the index of its closing quote: the
    character whose token the model's Yes/No answer for that candidate is read at
    (``llm.lora_head``). Every title is quoted data on its own line."""
    parts = ["A user watched, oldest first:\n"]
    parts += [quote(short_title(t)) + "\n" for t in history]
    parts.append("Candidates for the next watch:\n")
    marks = []
    for t in candidates:
        q = quote(short_title(t))
        marks.append(sum(map(len, parts)) + len(q) - 1)
        parts.append(q + "\n")
    return "".join(parts), marks


# ---- parsers -------------------------------------------------------------------------------------
_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.):]|[A-Za-z][.)])\s*")


def parse_trigger_list(text: object, max_chars: int = 80, max_n: int = 100) -> list[str]:
    """Triggers from a list the LLM wrote: one per line (or comma/semicolon separated on one
    line); numbering, bullets and quotes removed; empty, over-long, control-character and
    duplicate (case-insensitive) entries dropped."""
    if not isinstance(text, str):
        return []
    lines = text[:20000].splitlines()
    if len([ln for ln in lines if ln.strip()]) == 1:
        lines = re.split(r"[;,]", lines[0] if lines[0].strip() else
                         next(ln for ln in lines if ln.strip()))
    out: list[str] = []
    seen: set[str] = set()
    for line in lines:
        item = _BULLET.sub("", line).strip().strip("\"'`\u201c\u201d").strip()
        if not item or len(item) > max_chars:
            continue
        if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in item):
            continue
        if item.lower() in seen:
            continue
        seen.add(item.lower())
        out.append(item)
        if len(out) >= max_n:
            break
    return out
