"""Registries of named parts (attacks, defenses, backbones) that carry their own metadata.

Each entry says, beside its name, what the rest of the system must know about it: whether it
needs the LLM service, which victims it works with, whether a defender may simulate it. Config
validation, the job and the sweep read these declarations, so adding an attack or a defense is
one module plus one ``REGISTRY["name"] = Entry(lazy(...), ...)`` line and nothing else.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

VICTIM_KINDS = ("any", "sequential", "titles")  # see ``Entry.victims``


class UnknownName(ConfigError, KeyError):
    """A config error that is also a ``KeyError``, so a registry behaves as a mapping."""

    __str__ = Exception.__str__


class lazy:  # lower case: reads as a function in the registries
    """``lazy("recsec_ray.attacks.dp", "dp_attack")``: calls that function, imported when
    first needed, so a job that runs ``none`` never loads PEFT or a surrogate. A plain class
    (not a closure) so registries stay picklable."""

    def __init__(self, module: str, func: str):
        self.module, self.func = module, func

    def resolve(self) -> Any:
        return getattr(importlib.import_module(self.module), self.func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"lazy({self.module}.{self.func})"


@dataclass(frozen=True)
class Entry:
    """One attack or defense: its function and what it needs.

    ``victims``: ``any``; ``sequential`` (needs a backbone with an item table and per-position
    states: LoRec reads them, APR perturbs the table); ``titles`` (poisons or reads titles, so
    the victim must read titles: text items or the LLM recommender).
    ``simulable``: a defender may run it to make its own labelled fake users (it needs neither
    the LLM nor a surrogate model).
    """

    fn: Callable[..., Any]
    needs_llm: bool = False
    victims: str = "any"
    simulable: bool = False
    about: str = ""

    def __post_init__(self) -> None:
        if self.victims not in VICTIM_KINDS:
            raise ConfigError(f"victims: {self.victims!r} is not one of {', '.join(VICTIM_KINDS)}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


class Registry(MutableMapping[str, Any]):
    """Name -> entry (an ``Entry`` calls its function: ``ATTACKS[name](ctx)``); an unknown name
    fails naming the config ``field`` and the known names."""

    def __init__(self, field: str, entries: dict[str, Any]):
        self.field = field
        self._entries: dict[str, Any] = {}
        for name, entry in entries.items():
            self[name] = entry

    def entry(self, name: str) -> Any:
        self.check(name)
        return self._entries[name]

    def where(self, **need: Any) -> list[str]:
        """Names whose entries have every given attribute value."""
        return [n for n, e in self._entries.items()
                if all(getattr(e, k) == v for k, v in need.items())]

    def check(self, name: Any) -> None:
        if name not in self._entries:
            raise UnknownName(f"{self.field}: {name!r} is not one of {', '.join(self)}")

    def __getitem__(self, name: str) -> Any:
        return self.entry(name)

    def __setitem__(self, name: str, entry: Any) -> None:
        # a bare function (a test's toy defense) becomes an Entry with default needs
        plain = callable(entry) and not hasattr(entry, "fn")
        self._entries[name] = Entry(entry) if plain else entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.field}: {', '.join(self)})"
