"""Defense registry: ``DEFENSES[name](ctx: DefenseContext) -> Sanitation``.

Each defense lives in its own module and is imported only when called, so a job that runs
``none`` never loads PEFT or the LLM tooling; each entry declares what it needs
(``registry.Entry``).
"""

from __future__ import annotations

from collections.abc import Callable

from ..models.hooks import TrainHook
from ..registry import Entry, Registry, lazy
from .base import DefenseContext, Sanitation


def no_defense(ctx: DefenseContext) -> Sanitation:
    """Defense 'none': everyone trains at weight 1; no detection scores."""
    return Sanitation.keep_all(ctx.data)


DEFENSES = Registry("defense.name", {
    "none": Entry(no_defense),
    "llm4dec": Entry(lazy(f"{__name__}.llm4dec", "llm4dec"), needs_llm=True),
    "lorec": Entry(lazy(f"{__name__}.lorec", "lorec"), needs_llm=True, victims="sequential"),
    "lorec_control": Entry(lazy(f"{__name__}.lorec", "lorec_control"), needs_llm=True,
                           victims="sequential"),
    "pscanner": Entry(lazy(f"{__name__}.pscanner", "pscanner"), needs_llm=True),
    "apr": Entry(lazy(f"{__name__}.apr", "apr"), victims="sequential"),
    "detector": Entry(lazy(f"{__name__}.detector", "detector")),
    "onion": Entry(lazy(f"{__name__}.onion", "onion"), needs_llm=True),
})


def get_defense(name: str) -> Callable[[DefenseContext], Sanitation]:
    return DEFENSES[name]


__all__ = ["DEFENSES", "DefenseContext", "Sanitation", "TrainHook", "get_defense",
           "no_defense"]
