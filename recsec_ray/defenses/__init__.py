"""Defense registry: ``DEFENSES[name](ctx: DefenseContext) -> Sanitation``.

Each defense lives in its own module and is imported only when called, so a job that runs
``none`` never loads PEFT or the LLM tooling.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .base import DefenseContext, Sanitation, TrainHook


def no_defense(ctx: DefenseContext) -> Sanitation:
    """Defense 'none': everyone trains at weight 1; no detection scores."""
    return Sanitation.keep_all(ctx.data)


def _llm4dec(ctx: DefenseContext) -> Sanitation:
    from .llm4dec import llm4dec

    return llm4dec(ctx)


def _lorec(ctx: DefenseContext) -> Sanitation:
    from .lorec import lorec

    return lorec(ctx)


def _pscanner(ctx: DefenseContext) -> Sanitation:
    from .pscanner import pscanner

    return pscanner(ctx)


def _apr(ctx: DefenseContext) -> Sanitation:
    from .apr import apr

    return apr(ctx)


def _detector(ctx: DefenseContext) -> Sanitation:
    from .detector import detector

    return detector(ctx)


def _onion(ctx: DefenseContext) -> Sanitation:
    from .onion import onion

    return onion(ctx)


DEFENSES: dict[str, Callable[[DefenseContext], Sanitation]] = {
    "none": no_defense,
    "llm4dec": _llm4dec,
    "lorec": _lorec,
    "pscanner": _pscanner,
    "apr": _apr,
    "detector": _detector,
    "onion": _onion,
}


def get_defense(name: str) -> Callable[[DefenseContext], Sanitation]:
    try:
        return DEFENSES[name]
    except KeyError:
        raise ConfigError(f"defense.name: {name!r} is not one of {', '.join(DEFENSES)}") \
            from None


__all__ = ["DEFENSES", "DefenseContext", "Sanitation", "TrainHook", "get_defense",
           "no_defense"]
