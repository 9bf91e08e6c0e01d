"""The transformers backend: plain PyTorch forward passes over padded batches, CPU or GPU.

Live traffic goes through a MicroBatcher (one worker thread owns the models), so concurrent
callers share forward passes. Greedy and seeded sampling use a per-row generator, so a
prompt's answer does not depend on which other prompts shared its batch.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import Future
from typing import Any

import numpy as np

from .backend import (
    Job,
    LLMRequestError,
    ModelInfo,
    ModelTable,
    check_adapter_folder,
    job_length,
)
from .batching import MicroBatcher
from .models import offline_env


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


class HFBackend:
    name = "transformers"
    numerics = "pad-bucket-16"  # see _run_batch

    def __init__(self, device: str = "auto", max_batch: int = 32, max_wait_s: float = 0.005,
                 table: ModelTable | None = None) -> None:
        self.device = pick_device(device)
        self.table = table or ModelTable()
        self.max_batch = max_batch
        self._models: dict[str, Any] = {}
        self._lock = threading.RLock()
        self.loads: Counter[str] = Counter()
        self.tokens = 0
        self.batcher = MicroBatcher(self._run_batch, max_batch, max_wait_s,
                                    group=lambda job: _width(job_length(job)))

    # ---- models ---------------------------------------------------------------------------
    def model_info(self, model: str) -> ModelInfo:
        return self.table.info(model)

    def _weights(self, model: str):
        """Load once per process (counted: a sweep must load each model once)."""
        with self._lock:
            if model in self._models:
                return self._models[model]
            import torch
            from transformers import AutoModel, AutoModelForCausalLM

            info = self.model_info(model)
            cls = AutoModel if info.spec.kind == "encoder" else AutoModelForCausalLM
            with offline_env():
                net = cls.from_pretrained(info.folder, dtype=torch.float32, local_files_only=True)
            net.to(self.device).eval()
            self._models[model] = net
            self.loads[model] += 1
            return net

    def preload(self, model: str, call: str) -> None:
        """Load weights now (the driver does this before trials start)."""
        self._weights(model)

    def load_adapter(self, name: str, path: str, model: str) -> None:
        """A PEFT LoRA adapter (safetensors only) under ``name``; reloading a name replaces it."""
        folder = check_adapter_folder(path)
        info = self.model_info(model)
        if info.spec.kind != "causal":
            raise LLMRequestError(f"adapters need a causal LM; {model!r} is an encoder")
        with self._lock:
            from peft import PeftModel

            net = self._weights(model)
            with offline_env():
                if not isinstance(net, PeftModel):
                    net = PeftModel.from_pretrained(net, folder, adapter_name=name,
                                                    use_safetensors=True)
                    self._models[model] = net.eval()
                else:
                    if name in net.peft_config:
                        net.delete_adapter(name)
                    net.load_adapter(folder, adapter_name=name, use_safetensors=True)
                    net.eval()
            info.adapters[name] = folder

    # ---- serving --------------------------------------------------------------------------
    def submit(self, jobs: list[Job]) -> list[Future]:
        return self.batcher.submit(jobs)

    def run_offline(self, jobs: list[Job]) -> list[Any]:
        """The backend's own batch call: group, sort by length, chunk; no queue, no threads."""
        out: list[Any] = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault((j.call, j.model, j.adapter, j.params), []).append(i)
        for idx in groups.values():
            idx.sort(key=lambda i: job_length(jobs[i]))
            for s in range(0, len(idx), self.max_batch):
                chunk = idx[s:s + self.max_batch]
                for i, r in zip(chunk, self._run_batch([jobs[i] for i in chunk])):
                    out[i] = r
        return out

    def _run_batch(self, jobs: list[Job]) -> list[Any]:
        """Jobs of one (call, model, adapter, params), run per padding width bucket.

        A row's result depends, in the last float bits, on how wide its batch is padded
        (attention sums run over the padded length), and batches form by timing. So each job
        always runs at its own width, ``_width(job_length)``; results then do not depend on
        the batch-mates, and the same config gives the same metrics however calls batch."""
        import torch

        first = jobs[0]
        out: list[Any] = [None] * len(jobs)
        groups: dict[int, list[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault(_width(job_length(j)), []).append(i)
        with self._lock, torch.inference_mode():
            net = self._weights(first.model)
            self.tokens += sum(len(j.ids) for j in jobs)
            with _adapter(net, first.adapter):
                for idx in groups.values():
                    part = [jobs[i] for i in idx]
                    if first.call == "embed":
                        res = list(self._embed(net, part))
                    elif first.call == "hidden":
                        res = self._hidden(net, part)
                    elif first.call == "score":
                        res = self._score(net, part)
                    else:
                        res = self._generate(net, part, self.model_info(first.model))
                    for i, r in zip(idx, res, strict=True):
                        out[i] = r
        return out

    def _pad(self, rows: list[tuple[int, ...]], left: bool):
        import torch

        width = _width(max(len(r) for r in rows))
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            sl = slice(width - len(r), width) if left else slice(0, len(r))
            ids[i, sl] = torch.tensor(r)
            mask[i, sl] = 1
        return ids.to(self.device), mask.to(self.device)

    def _embed(self, net, jobs: list[Job]) -> np.ndarray:
        """Mean of the last hidden state over real tokens (right padding)."""
        body, _ = _parts(net)
        ids, mask = self._pad([j.ids for j in jobs], left=False)
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return ((hidden * m).sum(1) / m.sum(1)).float().cpu().numpy()

    def _hidden(self, net, jobs: list[Job]) -> list[np.ndarray]:
        """The residual stream entering layer ``params[0]`` at every real token (right
        padding, as ``llm.split`` expects): the cacheable lower part of a split model."""
        from .split import check_layer, decoder, lower

        layer = jobs[0].params[0]
        check_layer(net, layer)
        ids, mask = self._pad([j.ids for j in jobs], left=False)
        hidden = lower(decoder(net), ids, mask, layer).float().cpu().numpy()
        return [hidden[k, :len(j.ids)].copy() for k, j in enumerate(jobs)]

    def _score(self, net, jobs: list[Job]) -> list[np.ndarray]:
        """Sum log-prob of each choice's tokens after the prompt, all rows in one forward.

        When every choice is one token, one row per prompt suffices (the next-token
        distribution); otherwise one row per (prompt, choice). The LM head runs only on the
        positions that predict answer tokens (a full-vocabulary logit tensor per position
        would need gigabytes)."""
        import torch

        body, head = _parts(net)
        choices: tuple[tuple[int, ...], ...] = jobs[0].params
        single = all(len(c) == 1 for c in choices)
        rows = [j.ids for j in jobs] if single else [j.ids + c for j in jobs for c in choices]
        ids, mask = self._pad(rows, left=False)
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
        out = []
        for k, j in enumerate(jobs):
            n = len(j.ids)
            if single:
                logp = torch.log_softmax(head(hidden[k, n - 1]).float(), -1)
                out.append(logp[[c[0] for c in choices]].double().cpu().numpy())
                continue
            vals = []
            for c_i, c in enumerate(choices):
                r = k * len(choices) + c_i
                logp = torch.log_softmax(head(hidden[r, n - 1:n - 1 + len(c)]).float(), -1)
                vals.append(float(logp[torch.arange(len(c)), torch.tensor(c)].double().sum()))
            out.append(np.array(vals))
        return out

    def _generate(self, net, jobs: list[Job], info: ModelInfo) -> list[str]:
        """Left-padded incremental decoding with a KV cache; stops at the model's EOS ids."""
        import torch

        max_new, temperature, seed = jobs[0].params
        ids, mask = self._pad([j.ids for j in jobs], left=True)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        gens = [torch.Generator(device=self.device).manual_seed(int(seed)) for _ in jobs]
        eos = torch.tensor(info.eos_ids, device=self.device)
        done = torch.zeros(len(jobs), dtype=torch.bool, device=self.device)
        new: list[list[int]] = [[] for _ in jobs]
        out = net(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                  logits_to_keep=1)
        for _ in range(max_new):
            logits = out.logits[:, -1, :].float()
            if temperature <= 0:
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(logits / temperature, -1)
                nxt = torch.stack([torch.multinomial(probs[i], 1, generator=g)[0]
                                   for i, g in enumerate(gens)])
            for i in range(len(jobs)):
                if not done[i]:
                    if bool(torch.isin(nxt[i], eos)):
                        done[i] = True
                    else:
                        new[i].append(int(nxt[i]))
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            pos = pos[:, -1:] + 1
            out = net(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                      past_key_values=out.past_key_values, use_cache=True)
        self.tokens += sum(len(n) for n in new)
        return [info.tokenizer.decode(n, skip_special_tokens=True) for n in new]

    def stats(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "model_loads": dict(self.loads),
                "tokens": self.tokens, **self.batcher.stats()}

    def close(self) -> None:
        self.batcher.close()


WIDTH_STEP = 16  # padding granularity (HFBackend.numerics): at most 15 pad tokens per row


def _width(n: int) -> int:
    return -(-n // WIDTH_STEP) * WIDTH_STEP


class _adapter:
    """Run with LoRA adapter ``name`` active, or with adapters disabled for the base model."""

    def __init__(self, net, name: str | None) -> None:
        self.net, self.name, self._ctx = net, name, None

    def __enter__(self):
        from peft import PeftModel

        if not isinstance(self.net, PeftModel):
            if self.name is not None:
                raise LLMRequestError(f"adapter {self.name!r} is not loaded")
            return
        if self.name is None:
            self._ctx = self.net.disable_adapter()
            self._ctx.__enter__()
        else:
            self.net.set_adapter(self.name)

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        return False


def _parts(net):
    """(transformer body giving ``last_hidden_state``, LM head or None) of a plain, PEFT-wrapped
    or encoder model; LoRA layers live inside the body, so adapters still apply."""
    from peft import PeftModel

    base = net.get_base_model() if isinstance(net, PeftModel) else net
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if head is None:
        return base, None
    return base.get_decoder(), head
