"""The interface trials use to reach the LLM, whether in-process or through the shared actor."""

from __future__ import annotations

import threading
from typing import Any, Protocol

import numpy as np


class LLMClient(Protocol):
    """Every LLM call of the project goes through these methods.

    ``model`` names which loaded model answers (registry name such as ``"smollm2"`` or
    ``"minilm"``, a Hugging Face name or a local path; None: the service's default, i.e.
    ``llm.embed_model`` for ``embed`` and ``llm.model`` for the other calls).
    ``adapter`` names a LoRA adapter loaded with ``load_adapter``.
    Prompts longer than ``llm.max_tokens`` tokens are truncated from the LEFT (the question and
    the most recent titles sit at the end). Bad requests raise ``LLMRequestError`` (one line).
    ``stats()`` counts THIS client's ``calls``, ``items``, ``cache_hits`` and
    ``cache_hit_rate`` (a job's ``llm_calls`` / ``llm_cache_hit_rate``); the service's totals
    (batches, tokens, queue wait, ``model_loads``) are under ``stats()["service"]``.
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

    def hidden(self, texts: list[str], *, layer: int,
               model: str | None = None) -> list[np.ndarray]:
        """Per text, the (tokens, d) float32 residual stream entering decoder layer ``layer``
        (``llm.split.lower``), one row per token of the service's tokenization: the frozen
        lower layers of a model whose top layers are trained in-process (``llm.lora_head``)."""
        ...

    def load_adapter(self, name: str, path: str, *, model: str | None = None) -> None:
        ...

    def stats(self) -> dict[str, Any]:
        ...


class _Counting:
    """Per-client accounting: a trial's ``llm_calls`` and ``llm_cache_hit_rate`` are its own,
    not the whole sweep's (the service's totals are under ``stats()['service']``)."""

    def __init__(self) -> None:
        self.calls = 0
        self.items = 0
        self.hits = 0
        self._count_lock = threading.Lock()  # ONION calls one client from 8 threads

    def _count(self, n: int, hits: int) -> None:
        with self._count_lock:
            self.calls += 1
            self.items += n
            self.hits += hits

    def _client_stats(self, service: dict[str, Any]) -> dict[str, Any]:
        return {"calls": self.calls, "items": self.items, "cache_hits": self.hits,
                "cache_hit_rate": self.hits / self.items if self.items else 0.0,
                "service": service}


class LocalClient(_Counting):
    """In-process client: the backend lives in this process (a job run without Ray)."""

    def __init__(self, service) -> None:
        super().__init__()
        self.service = service

    def _run(self, call: str, texts: list[str], model, adapter, **params):
        pending = self.service.begin(call, texts, model=model, adapter=adapter, **params)
        result = pending.result()
        self._count(len(texts), pending.hits)
        return result

    def embed(self, texts, *, model=None, adapter=None):
        return self._run("embed", texts, model, adapter)

    def generate(self, prompts, *, max_tokens=64, temperature=0.0, seed=0, model=None,
                 adapter=None):
        return self._run("generate", prompts, model, adapter, max_tokens=max_tokens,
                         temperature=temperature, seed=seed)

    def score(self, prompts, choices, *, model=None, adapter=None):
        return self._run("score", prompts, model, adapter, choices=list(choices))

    def hidden(self, texts, *, layer, model=None):
        return self._run("hidden", texts, model, None, layer=layer)

    def load_adapter(self, name, path, *, model=None):
        self.service.load_adapter(name, path, model=model)

    def stats(self):
        return self._client_stats(self.service.stats())
