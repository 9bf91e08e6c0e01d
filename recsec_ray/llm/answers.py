"""P(first answer | one of two answers): the one reading of a Yes/No verdict.

Zero-shot LLM4Dec, P-Scanner's scanner in-process, and P-Scanner through the shared service all
ask a question answered " Yes" or " No" and want P(Yes) among those two. From the two answers'
log-probabilities (the service's ``score``) or raw logits (an in-process model) it is the same
number, ``sigmoid(s_yes - s_no)``: the normaliser over the rest of the vocabulary cancels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import ModelOutputError
from .prompts import YES_NO

if TYPE_CHECKING:
    from .client import LLMClient


def p_first(scores: np.ndarray) -> np.ndarray:
    """(n, 2) log-probabilities or logits of two answers -> (n,) P(first | first or second)."""
    s = np.asarray(scores, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(s[:, 1] - s[:, 0]))


def service_p_yes(llm: LLMClient, prompts: list[str], *, model: str | None,
                  adapter: str | None = None) -> np.ndarray:
    """P(" Yes" | " Yes" or " No") per prompt from the shared service (with ``adapter``)."""
    if not prompts:
        return np.zeros(0)
    logp = np.asarray(llm.score(prompts, list(YES_NO), model=model, adapter=adapter),
                      dtype=np.float64)
    if logp.shape != (len(prompts), 2) or not np.isfinite(logp).all():
        with_adapter = f" with adapter {adapter!r}" if adapter else ""
        raise ModelOutputError(f"llm.model: score(){with_adapter} returned {logp.shape} / "
                               f"non-finite log-probabilities for {len(prompts)} prompts")
    return p_first(logp)
