"""Item encoders: how an item index becomes a vector.

Both return the whole table ``(n_items + 1, d)`` with row 0 (padding) zero, so one table serves
as the input embedding and as the output layer (scores = user vector · item vector).

- ``IDItems``: a free vector per item; the usual sequential-recommender choice.
- ``TextItems``: a fixed, precomputed title-embedding matrix (from the LLM service) through a
  Linear + GELU adapter, as in the LoRec reference (DESIGN §9). The matrix is a buffer, not a
  parameter, so ``set_features`` can swap in embeddings of edited titles (a BadRec trigger) at
  evaluation time without retraining.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError


class IDItems(nn.Module):
    def __init__(self, n_items: int, dim: int):
        super().__init__()
        self.table = nn.Embedding(n_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.table.weight, std=0.02)  # small logits at the start (stable CE)
        with torch.no_grad():
            self.table.weight[0].zero_()

    def forward(self) -> torch.Tensor:
        return self.table.weight

    def set_features(self, features: np.ndarray) -> None:
        raise ConfigError("model.items: item features can only be swapped for 'text' items")


class TextItems(nn.Module):
    def __init__(self, features: np.ndarray, dim: int):
        super().__init__()
        feats = _as_features(features, None)
        self.register_buffer("features", feats)
        # Title embeddings come at any scale (unit-norm sentence vectors, raw LLM hidden states
        # with norms in the tens). One fixed factor, from the clean matrix, brings entries to
        # unit mean square, so the adapter (default init) learns at the same pace whatever
        # the encoder; swapped-in (triggered) features go through exactly the same map.
        rms = feats[1:].pow(2).mean().sqrt() if len(feats) > 1 else torch.tensor(1.0)
        self.register_buffer("scale", rms.clamp(min=1e-12))
        self.adapter = nn.Linear(feats.shape[1], dim)

    def forward(self) -> torch.Tensor:
        vectors = nn.functional.gelu(self.adapter(self.features / self.scale))
        pad = torch.ones(vectors.shape[0], 1, device=vectors.device)
        pad[0] = 0.0
        return vectors * pad

    def set_features(self, features: np.ndarray) -> None:
        self.features = _as_features(features, tuple(self.features.shape)).to(
            self.features.device)


def _as_features(features: np.ndarray, shape: tuple[int, ...] | None) -> torch.Tensor:
    arr = np.asarray(features, dtype=np.float32)
    if arr.ndim != 2:
        raise ConfigError(f"item features: expected a 2-D (n_items + 1, dim) matrix, got shape "
                          f"{arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ConfigError(f"item features: expected shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConfigError("item features: contain NaN or infinite values")
    return torch.from_numpy(arr.copy())


def build_items(kind: str, n_items: int, dim: int,
                features: np.ndarray | None) -> nn.Module:
    if kind == "id":
        return IDItems(n_items, dim)
    if features is None:
        raise ConfigError("model.items: 'text' items need a title-embedding matrix "
                          "(item_features)")
    if len(features) != n_items + 1:
        raise ConfigError(f"item features: {len(features)} rows for {n_items} items; expected "
                          f"n_items + 1 (row 0 = padding)")
    return TextItems(features, dim)
