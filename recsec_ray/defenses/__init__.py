"""Defense registry: ``DEFENSES[name](ctx: DefenseContext) -> Sanitation``.

Each defense lives in its own module and is imported only when called, so a job that runs
``none`` never loads PEFT or the LLM tooling.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from ..registry import lazy
from .base import DefenseContext, Sanitation, TrainHook


def no_defense(ctx: DefenseContext) -> Sanitation:
    """Defense 'none': everyone trains at weight 1; no detection scores."""
    return Sanitation.keep_all(ctx.data)


DEFENSES: dict[str, Callable[[DefenseContext], Sanitation]] = {
    "none": no_defense,
    "llm4dec": lazy(f"{__name__}.llm4dec", "llm4dec"),
    "lorec": lazy(f"{__name__}.lorec", "lorec"),
    "pscanner": lazy(f"{__name__}.pscanner", "pscanner"),
    "apr": lazy(f"{__name__}.apr", "apr"),
    "detector": lazy(f"{__name__}.detector", "detector"),
    "onion": lazy(f"{__name__}.onion", "onion"),
}


def get_defense(name: str) -> Callable[[DefenseContext], Sanitation]:
    try:
        return DEFENSES[name]
    except KeyError:
        raise ConfigError(f"defense.name: {name!r} is not one of {', '.join(DEFENSES)}") \
            from None


__all__ = ["DEFENSES", "DefenseContext", "Sanitation", "TrainHook", "get_defense",
           "no_defense"]
