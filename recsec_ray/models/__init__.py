"""Sequential recommenders found by name (DESIGN §4 Victims).

``build_model(cfg, n_items, max_len)`` -> a ``SeqRecommender``; ``trainer.train`` fits any of
them. The LLM recommender (``llmrec``) is a different kind of model and lives in
``models/llmrec.py``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import ModelConfig
from ..errors import ConfigError
from .base import SeqRecommender
from .bert4rec import BERT4Rec
from .gru4rec import GRU4Rec
from .pop import Pop
from .sasrec import SASRec

BACKBONES: dict[str, type] = {"pop": Pop, "sasrec": SASRec, "gru4rec": GRU4Rec,
                              "bert4rec": BERT4Rec}


def build_model(cfg: ModelConfig, n_items: int, max_len: int,
                item_features: np.ndarray | None = None, *, seed: int = 0) -> SeqRecommender:
    """A freshly initialised backbone; initial weights depend only on ``seed`` (not on the
    caller's global torch RNG state), so the same config and seed give the same model."""
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"model.backbone: {cfg.backbone!r} is not built here (backbones: "
                          f"{', '.join(BACKBONES)}; 'llmrec' is in recsec_ray.models.llmrec)")
    if n_items < 1:
        raise ConfigError(f"n_items: {n_items} must be >= 1")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BACKBONES[cfg.backbone](cfg, n_items, max_len, item_features)


__all__ = ["BACKBONES", "SeqRecommender", "build_model"]
