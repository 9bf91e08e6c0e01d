"""Appending a backdoor trigger to titles: the one rule the attack (training-time titles) and
every victim's backdoor evaluation (test-time pushed items) share, kept here so neither a
model nor a defense imports the attack."""

from __future__ import annotations

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
