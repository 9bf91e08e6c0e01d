"""P-Scanner's scanner: the base LLM plus a LoRA adapter that answers "does this title carry a
trigger?" with Yes or No.

It is the project's one LoRA single-token classifier (``llm.lora_head``) with the labels
" Yes" / " No", trained on contrastive pairs: the same clean title once as is (No) and once
with a synthetic trigger (Yes), so the only difference the model can latch onto is the
trigger. The classifier reads its answer exactly where ``LLMClient.score`` does, so the saved
adapter (safetensors, named by the hash of its weights) answers the same when the shared LLM
service serves it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..llm.answers import p_first
from ..llm.lora_head import LoraClassifier
from ..llm.prompts import YES_NO, pscanner_prompt

CHOICES = YES_NO  # (" Yes", " No"): label 0 is Yes
# LoRA on the top layers only: backward then stops there, which about halves the CPU cost of
# a step, and the question (does the quoted title end oddly?) is a late-layer one
TOP_LAYERS = 8


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


class LoraScanner:
    """The Yes/No classifier with the scanner's settings; ``train`` / ``p_yes`` / ``save``."""

    def __init__(self, model_name: str, seed: int, *, device: str = "cpu", r: int = 8,
                 lr: float = 2e-3, top_layers: int = TOP_LAYERS):
        self.seed = seed
        self.head = LoraClassifier(model_name, CHOICES, seed=seed, purpose="pscanner",
                                   device=device, r=r, lr=lr, top_layers=top_layers,
                                   batch_size=16)

    @property
    def tokens_trained(self) -> int:
        return self.head.tokens_trained

    @property
    def train_time_s(self) -> float:
        return self.head.train_time_s

    def train(self, prompts: list[str], labels: np.ndarray, *, epochs: int = 1) -> float:
        """``labels`` 1 = carries a trigger (answer Yes); returns the mean loss."""
        rng = np.random.default_rng([self.seed, 0x5CA7, self.tokens_trained])
        targets = np.where(np.asarray(labels, dtype=bool), 0, 1)  # index into CHOICES
        losses = self.head.train(prompts, targets, rng=rng, epochs=epochs)
        return float(np.mean(losses)) if losses else 0.0

    def p_yes(self, prompts: list[str]) -> np.ndarray:
        """In-process P(Yes | Yes or No), used between rounds (final scores go through the
        shared service)."""
        return p_first(self.head.label_scores(prompts, batch_size=32)[0])

    def save(self, root: Path | None = None) -> tuple[str, str]:
        """Write the adapter (safetensors) under a content-derived name -> (name, folder)."""
        return self.head.save_adapter("pscanner", root)
