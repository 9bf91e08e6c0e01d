"""The interface trials use to reach the LLM, whether in-process or through the shared actor."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class LLMClient(Protocol):
    """Every LLM call of the project goes through these methods.

    ``model`` names which loaded model answers (registry name such as ``"smollm2"`` or
    ``"minilm"``, a Hugging Face name or a local path; None: the service's default model).
    ``adapter`` names a LoRA adapter loaded with ``load_adapter``.
    """

    def embed(self, texts: list[str], *, model: str | None = None,
              adapter: str | None = None) -> np.ndarray:
        """(len(texts), dim) float32: mean-pooled last hidden state."""
        ...

    def generate(self, prompts: list[str], *, max_tokens: int = 64, temperature: float = 0.0,
                 seed: int = 0, model: str | None = None,
                 adapter: str | None = None) -> list[str]:
        ...

    def score(self, prompts: list[str], choices: list[str], *, model: str | None = None,
              adapter: str | None = None) -> np.ndarray:
        """(len(prompts), len(choices)) log-probabilities of each fixed answer after each
        prompt (sum over the answer's tokens)."""
        ...

    def load_adapter(self, name: str, path: str, *, model: str | None = None) -> None:
        ...

    def stats(self) -> dict[str, Any]:
        ...
