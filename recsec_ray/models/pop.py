"""Most-popular: every user gets the items ranked by (weighted) training interaction counts.

The floor every sequential model must beat. It has the same interface as the backbones, with
d = 1: user vector 1, item vector = count, so ``scores`` and the metrics need no special case.
Fake users count too (with their loss weight), so popularity attacks move it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..data.sequences import SequenceData
from ..errors import ConfigError


class Pop(nn.Module):
    trainable = False  # ``fit`` counts; the trainer skips gradient descent

    def __init__(self, cfg: ModelConfig, n_items: int, max_len: int,
                 item_features: np.ndarray | None = None):
        super().__init__()
        self.n_items, self.max_len = n_items, max_len
        self.register_buffer("counts", torch.zeros(n_items + 1))

    def fit(self, data: SequenceData, weights: np.ndarray) -> None:
        parts = [data.train_seq(u) for u in range(data.n_users)]
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        per_item = np.repeat(np.asarray(weights, dtype=np.float64), [len(p) for p in parts])
        counts = np.bincount(flat, weights=per_item, minlength=self.n_items + 1)
        counts[0] = 0.0
        self.counts = torch.as_tensor(counts, dtype=torch.float32, device=self.counts.device)

    def item_vectors(self) -> torch.Tensor:
        return self.counts.unsqueeze(1)

    def hidden(self, seqs: torch.Tensor) -> torch.Tensor:
        return torch.ones(*seqs.shape, 1, device=self.counts.device)

    def user_vectors(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.hidden(seqs)[:, -1]

    def scores(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.user_vectors(seqs) @ self.item_vectors().T

    def seq_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise ConfigError("model.backbone: 'pop' is counted, not trained by a loss")

    def set_item_features(self, features: np.ndarray) -> None:
        raise ConfigError("model.backbone: 'pop' has no item features to swap")

    def item_features(self) -> None:
        return None
