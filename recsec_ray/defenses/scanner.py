"""P-Scanner's scanner: the base LLM plus a LoRA adapter that answers "does this title carry a
trigger?" with Yes or No.

It is the project's one LoRA reader (``llm.lora_head``) read at the prompt's last token,
trained with a logistic loss on contrastive pairs: the same clean title once as is (No) and
once with a synthetic trigger (Yes), so the only difference the model can latch onto is the
trigger. LoRA sits on the top ``TOP_LAYERS`` layers, whose input the shared service computes
once per prompt and caches (every trial that trains a scanner on the same titles reuses it).
It reads its answer exactly where ``LLMClient.score`` does, so the saved adapter (safetensors,
named by the hash of its weights) answers the same when the shared LLM service serves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F

from ..llm.lora_head import Inputs, LoraReader
from ..llm.prompts import pscanner_prompt

if TYPE_CHECKING:
    from ..llm.client import LLMClient

# The question (does the quoted title end oddly?) is a late-layer one; LoRA on the top 4 of
# SmolLM2's 30 layers learns it, and the 26 below are computed once per prompt, cached
TOP_LAYERS = 4


def scanner_prompt(title: str) -> str:
    """The question the scanner answers (``llm.prompts``); the title is quoted data."""
    return pscanner_prompt(title)


def insert_trigger(title: str, trigger: str, rng: np.random.Generator) -> str:
    """Mostly appended (as BadRec does), sometimes prepended or put in the middle, so the
    scanner learns the trigger rather than one position."""
    u = rng.random()
    if u < 0.7:
        return f"{title} {trigger}"
    if u < 0.85:
        return f"{trigger} {title}"
    words = title.split()
    cut = int(rng.integers(1, max(len(words), 2)))
    return " ".join(words[:cut] + [trigger] + words[cut:])


def _logistic(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` 1 = carries a trigger; s (B, 1) log-odds of Yes."""
    return F.binary_cross_entropy_with_logits(s[:, 0], y.float(), reduction="none")


class LoraScanner:
    """The Yes/No reader with the scanner's settings; ``train`` / ``p_yes`` / ``save``."""

    def __init__(self, model_name: str, seed: int, *, device: str = "cpu", r: int = 8,
                 lr: float = 2e-3, top_layers: int | None = TOP_LAYERS,
                 llm: LLMClient | None = None, max_tokens: int = 512):
        self.seed = seed
        self.head = LoraReader(model_name, seed=seed, purpose="pscanner", device=device, r=r,
                               lr=lr, top_layers=top_layers, batch_size=16, llm=llm,
                               max_tokens=max_tokens)

    @property
    def tokens_trained(self) -> int:
        return self.head.tokens_trained

    @property
    def train_time_s(self) -> float:
        return self.head.train_time_s

    def inputs(self, prompts: list[str]) -> list[Inputs]:
        return self.head.encode(prompts)

    def train(self, prompts: list[str], labels: np.ndarray, *, epochs: int = 1) -> float:
        """``labels`` 1 = carries a trigger (answer Yes); returns the mean loss."""
        rng = np.random.default_rng([self.seed, 0x5CA7, self.tokens_trained])
        losses = self.head.train(self.inputs(prompts), np.asarray(labels, dtype=np.int64),
                                 _logistic, rng=rng, epochs=epochs)
        return float(np.mean(losses)) if losses else 0.0

    def p_yes(self, prompts: list[str]) -> np.ndarray:
        """In-process P(Yes | Yes or No), used between rounds (final scores go through the
        shared service)."""
        if not prompts:
            return np.zeros(0)
        s = self.head.scores(self.inputs(prompts))[:, 0].astype(np.float64)
        return 1.0 / (1.0 + np.exp(-s))

    def save(self, root: Path | None = None) -> tuple[str, str]:
        """Write the adapter (safetensors) under a content-derived name -> (name, folder)."""
        return self.head.save_adapter("pscanner", root)
