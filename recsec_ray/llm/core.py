"""One LLM service (backend + cache + accounting), used in-process or inside the Ray actor.

A call is split per text: cached answers are read from the shared cache, identical texts
already in flight (another trial asked the same thing a moment ago) join that computation,
and the rest become backend jobs. ``begin`` returns a ``Pending`` that a thread can wait on
(``result``) or an asyncio actor can await (``aresult``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LLMConfig
from .backend import (
    CALLS,
    Job,
    LLMRequestError,
    ModelTable,
    check_adapter_folder,
    encode_choices,
    encode_text,
)
from .cache import ResultCache, make_key
from .models import cache_root

log = logging.getLogger(__name__)


def make_backend(cfg: LLMConfig, table: ModelTable):
    if cfg.backend == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend(cfg.device, cfg.max_batch, cfg.vllm_kv_cache_gib, table=table)
    from .hf_backend import HFBackend

    return HFBackend(cfg.device, cfg.max_batch, cfg.max_wait_ms / 1000.0, table=table)


class Pending:
    """The answers to one call: some known now (cache), the rest arriving as futures."""

    def __init__(self, call: str, values: list[Any], futures: dict[int, Future],
                 to_store: dict[int, str], hits: int, service: LLMService) -> None:
        self.call, self.values, self.futures = call, values, futures
        self.to_store, self.hits, self._svc = to_store, hits, service

    def _assemble(self) -> Any:
        fresh = {}
        for i, fut in self.futures.items():
            self.values[i] = fut.result()
            if i in self.to_store:
                fresh[self.to_store[i]] = self.values[i]
        if fresh and self._svc.cache is not None:
            try:
                self._svc.cache.put_many(fresh)
            except sqlite3.Error as err:  # the answers are computed; only reuse is lost
                log.warning("LLM cache: could not store %d results (%s)", len(fresh), err)
        if self.call == "generate":
            return list(self.values)
        if self.call == "hidden":  # one (tokens, d) array per text: lengths differ
            return [np.asarray(v, dtype=np.float32) for v in self.values]
        dtype = np.float32 if self.call == "embed" else np.float64
        return np.stack([np.asarray(v, dtype=dtype) for v in self.values])

    def result(self) -> Any:
        for fut in self.futures.values():
            fut.exception()  # wait for all before raising the first error
        return self._assemble()

    async def aresult(self) -> Any:
        if self.futures:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in self.futures.values()),
                                 return_exceptions=True)
        return self._assemble()


def _adapter_digest(folder: str) -> str:
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        digest.update((Path(folder) / name).read_bytes())
    return digest.hexdigest()


class LLMService:
    """Thread-safe; one per process per config (see ``llm.get_client``)."""

    def __init__(self, cfg: LLMConfig) -> None:
        self.cfg = cfg
        self.table = ModelTable()
        self.backend = make_backend(cfg, self.table)
        self.cache_folder = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else \
            cache_root() / "llm"
        self.cache = ResultCache(self.cache_folder) if cfg.cache else None
        self._inflight: dict[str, Future] = {}
        self._lock = threading.RLock()  # add_done_callback may run _done at once, inside it
        self._fingerprints: dict[tuple[str, str | None], str] = {}
        self.requests: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.started = time.time()

    def default_model(self, call: str) -> str:
        """Embeddings default to ``llm.embed_model``, generation and scoring to ``llm.model``."""
        return self.cfg.embed_model if call == "embed" else self.cfg.model

    # ---- fingerprints for cache keys -------------------------------------------------------
    def _fingerprint(self, model: str, adapter: str | None) -> str:
        key = (model, adapter)
        if key not in self._fingerprints:
            info = self.table.info(model)
            if adapter is None:
                # weights rewritten in place change mtime; CPU and GPU numbers differ slightly
                files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                               for p in Path(info.folder).iterdir()
                               if p.suffix in (".safetensors", ".bin", ".json"))
                self._fingerprints[key] = make_key(info.folder, files,
                                                   self.backend.device.split(":")[0])
            else:
                self._fingerprints[key] = _adapter_digest(info.adapters[adapter])
        return self._fingerprints[key]

    # ---- calls -----------------------------------------------------------------------------
    def begin(self, call: str, texts: list[str], *, model: str | None = None,
              adapter: str | None = None, use_cache: bool = True, **params: Any) -> Pending:
        """Start a call; ``use_cache=False`` computes everything (benchmarks, fresh samples)."""
        if call not in CALLS:
            raise LLMRequestError(f"unknown call {call!r} ({', '.join(CALLS)})")
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise LLMRequestError(f"{call}: expected a list of strings, got "
                                  f"{type(texts).__name__}")
        if not texts:
            raise LLMRequestError(f"{call}: the prompt list is empty")
        model = model or self.default_model(call)
        info = self.table.info(model)
        self.table.check_adapter(model, adapter)
        if call != "embed" and info.spec.kind != "causal":
            raise LLMRequestError(f"{call}: {model!r} is an encoder; it can only embed")
        limit, jparams, kparams = self._params(call, info, params)
        base = (self.backend.name, self.backend.numerics, self._fingerprint(model, None),
                adapter and self._fingerprint(model, adapter), call, kparams)
        keys = [make_key(*base, t) if isinstance(t, str) else None for t in texts]
        cache = self.cache if use_cache else None
        cached = cache.get_many([k for k in keys if k]) if cache is not None else {}
        values: list[Any] = [None] * len(texts)
        futures: dict[int, Future] = {}
        to_store: dict[int, str] = {}
        jobs: list[tuple[int, Job]] = []
        hits = dedup = 0
        with self._lock:
            for i, (t, k) in enumerate(zip(texts, keys)):
                if k in cached:
                    values[i] = cached[k]
                    hits += 1
                elif cache is not None and k in self._inflight:
                    futures[i] = self._inflight[k]
                    dedup += 1
                else:
                    ids = encode_text(info, t, limit, i)
                    self.counts["truncated"] += len(ids) >= limit
                    jobs.append((i, Job(call, model, adapter, jparams, ids)))
            submitted = self.backend.submit([j for _, j in jobs]) if jobs else []
            for (i, _), fut in zip(jobs, submitted):
                futures[i] = fut
                if cache is not None and keys[i]:
                    to_store[i] = keys[i]
                    self._inflight[keys[i]] = fut
                    fut.add_done_callback(lambda _f, k=keys[i]: self._done(k))
            self.requests[call] += 1  # under the lock: the actor serves calls from threads
            self.counts["items"] += len(texts)
            self.counts["cache_hits"] += hits
            self.counts["dedup_hits"] += dedup
            self.counts["computed"] += len(jobs)
        return Pending(call, values, futures, to_store, hits + dedup, self)

    def _done(self, key: str) -> None:
        with self._lock:
            self._inflight.pop(key, None)

    def _params(self, call: str, info, params: dict[str, Any]):
        """(prompt token limit, job params, cache-key params) with the inputs checked."""
        if call == "embed":
            if params:
                raise LLMRequestError(f"embed: unexpected parameters {sorted(params)}")
            limit = min(self.cfg.max_tokens, info.context)
            return limit, (), (limit,)
        if call == "hidden":
            layer = params.pop("layer", None)
            if params:
                raise LLMRequestError(f"hidden: unexpected parameters {sorted(params)}")
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 1:
                raise LLMRequestError(f"hidden: layer must be an int >= 1, got {layer!r}")
            limit = min(self.cfg.max_tokens, info.context)
            return limit, (layer,), (limit, layer)
        if call == "generate":
            max_new = params.pop("max_tokens", 64)
            temperature = float(params.pop("temperature", 0.0))
            seed = params.pop("seed", 0)
            if params:
                raise LLMRequestError(f"generate: unexpected parameters {sorted(params)}")
            if not isinstance(max_new, int) or max_new < 1:
                raise LLMRequestError(f"generate: max_tokens must be an int >= 1, got "
                                      f"{max_new!r}")
            if temperature < 0:
                raise LLMRequestError(f"generate: temperature must be >= 0, got {temperature}")
            limit = min(self.cfg.max_tokens, info.context - max_new)
            if limit < 1:
                raise LLMRequestError(f"generate: max_tokens={max_new} leaves no room for the "
                                      f"prompt in the model's context ({info.context})")
            jp = (max_new, temperature, int(seed))
            return limit, jp, (limit, *jp)
        choices = params.pop("choices", None)
        if params:
            raise LLMRequestError(f"score: unexpected parameters {sorted(params)}")
        if isinstance(choices, str) or not isinstance(choices, (list, tuple)):
            raise LLMRequestError("score: choices must be a list of strings")
        cids = encode_choices(info, list(choices), info.context)
        limit = min(self.cfg.max_tokens, info.context - max(len(c) for c in cids))
        return limit, cids, (limit, list(choices))

    def embed(self, texts: list[str], *, model: str | None = None,
              adapter: str | None = None) -> np.ndarray:
        return self.begin("embed", texts, model=model, adapter=adapter).result()

    def generate(self, prompts: list[str], *, max_tokens: int = 64, temperature: float = 0.0,
                 seed: int = 0, model: str | None = None,
                 adapter: str | None = None) -> list[str]:
        return self.begin("generate", prompts, model=model, adapter=adapter,
                          max_tokens=max_tokens, temperature=temperature, seed=seed).result()

    def score(self, prompts: list[str], choices: list[str], *, model: str | None = None,
              adapter: str | None = None) -> np.ndarray:
        return self.begin("score", prompts, model=model, adapter=adapter,
                          choices=choices).result()

    def hidden(self, texts: list[str], *, layer: int, model: str | None = None) -> list[np.ndarray]:
        return self.begin("hidden", texts, model=model, layer=layer).result()

    def load_adapter(self, name: str, path: str, *, model: str | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise LLMRequestError("load_adapter: the adapter name must be a non-empty string")
        model = model or self.cfg.model
        check_adapter_folder(path)
        self.backend.load_adapter(name, path, model)
        digest = _adapter_digest(self.table.info(model).adapters[name])  # now, not at first use
        with self._lock:
            self._fingerprints[(model, name)] = digest

    def preload(self, calls: tuple[str, ...] = ("embed", "score")) -> None:
        """Load the default model of each call before traffic arrives."""
        for call in calls:
            self.backend.preload(self.default_model(call), call)

    def offline(self, call: str, texts: list[str], *, model: str | None = None,
                **params: Any) -> Any:
        """The backend's own batch call, bypassing queue and cache (benchmark yardstick)."""
        model = model or self.default_model(call)
        info = self.table.info(model)
        limit, jparams, _ = self._params(call, info, dict(params))
        jobs = [Job(call, model, None, jparams, encode_text(info, t, limit, i))
                for i, t in enumerate(texts)]
        vals = self.backend.run_offline(jobs)
        return vals if call == "generate" else np.stack(vals)

    def stats(self) -> dict[str, Any]:
        c = self.counts
        served = c["cache_hits"] + c["dedup_hits"]
        return {"requests": dict(self.requests), "calls": sum(self.requests.values()),
                "items": c["items"], "cache_hits": c["cache_hits"],
                "dedup_hits": c["dedup_hits"], "computed": c["computed"],
                "truncated": c["truncated"],
                "cache_hit_rate": served / c["items"] if c["items"] else 0.0,
                "uptime_s": time.time() - self.started, **self.backend.stats()}

    def close(self) -> None:
        self.backend.close()
        if self.cache is not None:
            self.cache.close()
