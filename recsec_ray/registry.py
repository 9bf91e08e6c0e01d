"""Registry entries that import their module on first call.

A job that runs attack ``none`` and defense ``none`` never loads PEFT, the LLM tooling or a
surrogate model; adding an attack or defense stays one file plus one ``lazy(...)`` line.
"""

from __future__ import annotations

import importlib
from typing import Any


class lazy:  # lower case: reads as a function in the registries
    """``lazy("recsec_ray.attacks.dp", "dp_attack")``: calls that function, imported when
    first needed. A plain class (not a closure) so registries stay picklable."""

    def __init__(self, module: str, func: str):
        self.module, self.func = module, func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.func)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"lazy({self.module}.{self.func})"
