"""Victims found by name (DESIGN §4 Victims), each declaring what it can do.

``build_victim(ctx)`` -> a ``Victim`` (``models/victim.py``) for any backbone;
``build_model(cfg, n_items, max_len)`` -> the bare ``SeqRecommender`` of a sequential (or
``pop``) backbone, which ``trainer.train`` fits. Modules load on first use, so importing this
registry (config validation does) costs no torch import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..registry import Registry, lazy

if TYPE_CHECKING:
    import numpy as np

    from ..config import ModelConfig
    from .base import SeqRecommender
    from .victim import Victim, VictimContext


@dataclass(frozen=True)
class Backbone:
    """``fn(ctx) -> Victim``; ``model``: the module class a sequential/pop victim wraps.
    ``sequential``: an item table and per-position states (LoRec reads them, APR perturbs the
    table); ``text_items``: can embed titles as items (``items='text'``); ``reads_titles``:
    reads titles whatever ``items`` says (the LLM recommender)."""

    fn: Callable[..., Any]
    model: Callable[..., Any] | None = None
    sequential: bool = False
    text_items: bool = False
    reads_titles: bool = False
    needs_llm: bool = False
    # (model config, users' training-part lengths) -> training examples the victim learns
    # from (None: every next-item label, ``label_count``); BadRec's budget unit
    examples: Callable[..., int] | None = None

    def count_examples(self, cfg: ModelConfig, lengths: list[int]) -> int:
        return (self.examples or label_count)(cfg, lengths)

    def supports(self, victims: str, items: str) -> bool:
        """Whether a part declared for ``victims`` (``registry.VICTIM_KINDS``) can run."""
        if victims == "sequential":
            return self.sequential
        if victims == "titles":
            return self.reads_titles or (self.text_items and items == "text")
        return True


def label_count(cfg: ModelConfig, lengths: list[int]) -> int:
    """A sequential backbone learns every next item of a training part but the first."""
    return sum(max(n - 1, 0) for n in lengths)


_SEQ = lazy(f"{__name__}.victim", "SeqVictim")


def _seq(module: str, cls: str) -> Backbone:
    return Backbone(_SEQ, lazy(f"{__name__}.{module}", cls), sequential=True, text_items=True)


BACKBONES = Registry("model.backbone", {
    "pop": Backbone(_SEQ, lazy(f"{__name__}.pop", "Pop")),
    "sasrec": _seq("sasrec", "SASRec"),
    "gru4rec": _seq("gru4rec", "GRU4Rec"),
    "bert4rec": _seq("bert4rec", "BERT4Rec"),
    "llmrec": Backbone(lazy(f"{__name__}.llmrec", "LLMRecVictim"), reads_titles=True,
                       needs_llm=True, examples=lazy(f"{__name__}.llmrec", "count_examples")),
})


def sequential_backbones() -> list[str]:
    return BACKBONES.where(sequential=True)


def build_victim(ctx: VictimContext) -> Victim:
    return BACKBONES.entry(ctx.cfg.model.backbone).fn(ctx)


def build_model(cfg: ModelConfig, n_items: int, max_len: int,
                item_features: np.ndarray | None = None, *, seed: int = 0) -> SeqRecommender:
    """A freshly initialised backbone; initial weights depend only on ``seed`` (not on the
    caller's global torch RNG state), so the same config and seed give the same model."""
    import torch

    entry = BACKBONES.entry(cfg.backbone)
    if entry.model is None:
        raise ConfigError(f"model.backbone: {cfg.backbone!r} is not a sequential model "
                          f"(these are: pop, {', '.join(sequential_backbones())})")
    if n_items < 1:
        raise ConfigError(f"n_items: {n_items} must be >= 1")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return entry.model(cfg, n_items, max_len, item_features)


__all__ = ["BACKBONES", "Backbone", "build_model", "build_victim", "sequential_backbones"]
