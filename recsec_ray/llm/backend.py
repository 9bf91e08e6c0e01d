"""What every backend shares: one unit of work, token limits, tokenization, the backend API.

Tokenization happens here, once, with the model's own Hugging Face tokenizer, and both
backends receive token ids: so transformers and vLLM see identical inputs (their answers can be
compared exactly) and truncation follows one documented rule.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import RecsecError
from .models import ModelSpec, local_folder, offline_env, resolve_model

CALLS = ("embed", "generate", "score", "hidden")
MAX_MODEL_LEN = 4096  # context both backends use (KV-cache budget on CPU); prompts + answers


class LLMRequestError(RecsecError, ValueError):
    """A request the service cannot answer (unknown adapter, empty input, wrong model kind)."""


class LLMServiceError(RecsecError):
    """The shared LLM service is gone and did not come back after retries."""


@dataclass(frozen=True)
class Job:
    """One prompt's work. ``params``: generate (max_tokens, temperature, seed); score: the
    choices' token ids; hidden: (layer,); embed: (). Hashable so identical in-flight jobs can
    be merged."""

    call: str
    model: str
    adapter: str | None
    params: tuple
    ids: tuple[int, ...]


@dataclass
class ModelInfo:
    spec: ModelSpec
    folder: str
    tokenizer: Any
    context: int  # longest input the backends accept (prompt + answer), tokens
    eos_ids: tuple[int, ...]
    adapters: dict[str, str] = field(default_factory=dict)  # name -> folder


def load_model_info(name: str) -> ModelInfo:
    """Resolve ``name`` and load its tokenizer (fast, no weights)."""
    import json
    from pathlib import Path

    from transformers import AutoTokenizer

    spec = resolve_model(name)
    folder = local_folder(spec)
    with offline_env():
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    cfg = json.loads((Path(folder) / "config.json").read_text())
    ctx = int(cfg.get("max_position_embeddings") or MAX_MODEL_LEN)
    st_cfg = Path(folder) / "sentence_bert_config.json"  # the length the encoder was trained on
    if st_cfg.is_file():
        ctx = min(ctx, int(json.loads(st_cfg.read_text()).get("max_seq_length") or ctx))
    eos: set[int] = set()
    gen_path = Path(folder) / "generation_config.json"
    for source in (cfg, json.loads(gen_path.read_text()) if gen_path.is_file() else {}):
        e = source.get("eos_token_id")
        eos.update(e if isinstance(e, list) else [] if e is None else [e])
    if tok.eos_token_id is not None:
        eos.add(int(tok.eos_token_id))
    return ModelInfo(spec, folder, tok, min(ctx, MAX_MODEL_LEN), tuple(sorted(eos)))


def clean_text(text: str) -> str:
    """Lone surrogates (bytes decoded with ``surrogateescape``) become U+FFFD: tokenizers
    reject them, and an attacker's undecodable title must not crash a trial."""
    return re.sub("[\ud800-\udfff]", "\ufffd", text)


def _tokenize(info: ModelInfo, text: str, special: bool) -> list[int]:
    # split_special_tokens: a title spelling "<|im_end|>" or "[SEP]" stays plain text.
    return list(info.tokenizer(clean_text(text), add_special_tokens=special,
                               split_special_tokens=True)["input_ids"])


def encode_text(info: ModelInfo, text: str, limit: int, index: int) -> tuple[int, ...]:
    """Token ids of ``text`` (with the model's own BOS/CLS/SEP) truncated from the LEFT to
    ``limit`` tokens: the end of every project prompt carries the question, the most recent
    titles and the answer cue, so the oldest history is what goes (documented rule)."""
    if not isinstance(text, str):
        raise LLMRequestError(f"text {index}: expected a string, got {type(text).__name__}")
    if not text.strip():
        raise LLMRequestError(f"text {index}: is empty")
    full = _tokenize(info, text, True)
    tok = info.tokenizer
    marks = {tok.bos_token_id, tok.eos_token_id, tok.cls_token_id, tok.sep_token_id} - {None}
    n_pre = 0
    while n_pre < len(full) and full[n_pre] in marks:
        n_pre += 1
    n_suf = 0
    while n_suf < len(full) - n_pre and full[len(full) - 1 - n_suf] in marks:
        n_suf += 1
    body = full[n_pre:len(full) - n_suf]
    if not body:
        raise LLMRequestError(f"text {index}: has no tokens")
    keep = limit - n_pre - n_suf
    if keep < 1:
        raise LLMRequestError(f"text {index}: a limit of {limit} tokens leaves no room for text "
                              f"beside the model's {n_pre + n_suf} special tokens")
    return tuple(full[:n_pre] + body[max(len(body) - keep, 0):] + full[len(full) - n_suf:])


def encode_choices(info: ModelInfo, choices: list[str], limit: int) -> tuple[tuple[int, ...], ...]:
    """Each fixed answer's token ids (tokenized alone, so every prompt shares them)."""
    if not choices:
        raise LLMRequestError("score: the choice list is empty")
    out = []
    for i, c in enumerate(choices):
        if not isinstance(c, str) or not c:
            raise LLMRequestError(f"score: choice {i} must be a non-empty string")
        ids = tuple(_tokenize(info, c, False))
        if not ids:
            raise LLMRequestError(f"score: choice {i} ({c!r}) has no tokens")
        if len(ids) >= limit:
            raise LLMRequestError(f"score: choice {i} is {len(ids)} tokens, longer than the "
                                  f"context ({limit})")
        out.append(ids)
    return tuple(out)


def job_length(job: Job) -> int:
    extra = max((len(c) for c in job.params), default=0) if job.call == "score" else 0
    return len(job.ids) + extra


class Backend(Protocol):
    """A backend computes jobs: ``submit`` for live traffic (batched across callers),
    ``run_offline`` for the backend's own one-shot batch call (the benchmark's yardstick)."""

    name: str
    device: str  # "cpu", "cuda" or "cuda:N": answers differ slightly between kinds
    numerics: str  # how it computes (e.g. padding); part of cache keys, so a change recomputes

    def model_info(self, model: str) -> ModelInfo: ...

    def submit(self, jobs: list[Job]) -> list[Future]: ...

    def run_offline(self, jobs: list[Job]) -> list[Any]: ...

    def load_adapter(self, name: str, path: str, model: str) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class ModelTable:
    """Tokenizers and adapter names per model, shared by both backends; thread-safe."""

    def __init__(self) -> None:
        self._infos: dict[str, ModelInfo] = {}
        self._lock = threading.Lock()

    def info(self, model: str) -> ModelInfo:
        with self._lock:
            if model not in self._infos:
                self._infos[model] = load_model_info(model)
            return self._infos[model]

    def check_adapter(self, model: str, adapter: str | None) -> None:
        if adapter is not None and adapter not in self.info(model).adapters:
            known = ", ".join(sorted(self.info(model).adapters)) or "none loaded"
            raise LLMRequestError(f"adapter {adapter!r} is not loaded for model {model!r} "
                                  f"({known}); call load_adapter(name, path) first")


def check_adapter_folder(path: str) -> str:
    """Only safetensors adapters: a pickled ``adapter_model.bin`` could run code on load."""
    from pathlib import Path

    folder = Path(path).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise LLMRequestError(f"{folder}: not a PEFT adapter folder (no adapter_config.json)")
    if not (folder / "adapter_model.safetensors").is_file():
        raise LLMRequestError(f"{folder}: no adapter_model.safetensors (pickled .bin adapters "
                              "are refused: loading them can execute code)")
    return str(folder.resolve())
