"""The project's one in-process LoRA model: a causal LM read as Yes/No log-odds at chosen tokens.

Both LoRA users ask a yes/no question. P-Scanner's scanner reads it once, at a prompt's last
token ("does the quoted title carry a trigger?"); the LLM recommender reads it at the end of
every candidate title of a list ("is this the next item?"), so each candidate is judged where
its own tokens are and popularity or a trigger stay local features. The answer is
``s = logit(" Yes") - logit(" No")`` at a readout token: P(Yes | Yes or No) = sigmoid(s), the
same number the shared service's ``score`` gives for a prompt's last token (``answers``), so a
saved scanner adapter answers the same when the service serves it.

**Split training** (``top_layers=k``): LoRA sits on the top k decoder layers only, so the lower
layers' output is a pure function of the prompt. It is computed once per prompt by the shared
LLM service (``LLMClient.hidden``: batched, content-addressed, cached on disk and shared by
every trial of a sweep), and a training step runs only the top k layers (``llm.split``): the
same model as a full forward (to float rounding), at a fraction of the cost. Without a client
the lower states are computed here, with the same code. ``top_layers=None`` is the plain
reference: LoRA on every layer and a full forward and backward per step.

Prompts are tokenized as the service tokenizes them (``backend.clean_text``, the model's special
tokens, special-token spellings inside titles kept as text), rows are right-padded, and a
prompt too long for ``llm.max_tokens`` fails rather than being cut differently on both sides.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ConfigError, ModelOutputError
from ..paths import cache_root
from .backend import clean_text
from .models import local_folder, offline_env, resolve_model
from .prompts import YES_NO
from .split import decoder, lower, upper_at

if TYPE_CHECKING:
    from .client import LLMClient

# (examples seen this epoch, examples in the epoch, running mean loss) after each step
BatchCallback = Callable[[int, int, float], None]
# (B, R) log-odds, targets (B,) -> per-example loss (B,)
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
HIDDEN_CHUNK = 256  # prompts per ``hidden`` call: progress shows, a failure loses little


@contextlib.contextmanager
def _seeded(seed: int, device: str) -> Iterator[None]:
    """Torch randomness (LoRA init, dropout) from ``seed``, the caller's stream restored after."""
    devices = [torch.device(device)] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class Inputs:
    """One prompt as the model reads it: token ids, the readout tokens, and (split mode) the
    lower layers' states at every token (T, d)."""

    ids: tuple[int, ...]
    readouts: tuple[int, ...]
    lower: np.ndarray | None = None


class LoraReader:
    """Base causal LM + PEFT LoRA, answering Yes/No at readout tokens."""

    def __init__(self, model_name: str, *, seed: int, purpose: str, device: str = "cpu",
                 r: int = 8, alpha: int | None = None, dropout: float = 0.05,
                 target_modules: Sequence[str] = ("q_proj", "v_proj"),
                 top_layers: int | None = None, lr: float = 1e-3, batch_size: int = 16,
                 llm: LLMClient | None = None, max_tokens: int = 512):
        """``purpose`` names the user in error messages; ``alpha`` defaults to ``2 * r``;
        ``llm``: the service that computes (and caches) the lower layers' states."""
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = resolve_model(model_name)
        if spec.kind != "causal":
            raise ConfigError(f"llm.model: {model_name!r} is not a causal LM; {purpose} needs "
                              "one")
        folder = local_folder(spec)
        with offline_env():
            self.tok = AutoTokenizer.from_pretrained(folder)
            base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        ids = [self.tok(c, add_special_tokens=False)["input_ids"] for c in YES_NO]
        if any(len(i) != 1 for i in ids) or ids[0] == ids[1]:
            raise ConfigError(f"llm.model: {model_name!r} does not encode {YES_NO} as two "
                              f"distinct single tokens; {purpose} reads a one-token answer")
        self.model_name, self.purpose, self.llm = model_name, purpose, llm
        self.seed, self.device, self.batch_size = seed, device, batch_size
        self.max_tokens = max_tokens
        total = len(decoder(base).layers)
        if top_layers is not None and not 0 < top_layers < total:
            raise ConfigError(f"{purpose}: top_layers must be in 1..{total - 1} (the model has "
                              f"{total} layers), got {top_layers}")
        self.split = None if top_layers is None else total - top_layers
        layers = None if self.split is None else list(range(self.split, total))
        cfg = LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r,
                         lora_dropout=dropout, target_modules=list(target_modules),
                         layers_to_transform=layers, task_type="CAUSAL_LM")
        with _seeded(seed, device):  # LoRA's random init
            self.model = get_peft_model(base, cfg).to(device)
        self.model.eval()
        self.body = decoder(self.model)
        head = self.model.get_base_model().get_output_embeddings().weight
        self._yes_no = torch.tensor([ids[0][0], ids[1][0]], device=device)
        self._head = head
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                     lr=lr)
        self.tokens_trained = 0
        self.train_time_s = 0.0
        self.lower_time_s = 0.0

    # ---- prompts -> inputs -----------------------------------------------------------------------
    def encode(self, prompts: list[str], marks: list[Sequence[int]] | None = None,
               on_chunk: Callable[[int, int], None] | None = None) -> list[Inputs]:
        """Each prompt's tokens and readouts: the tokens holding the characters at
        ``marks[i]`` (None: the last token); in split mode with the lower layers' states."""
        out = []
        for i, p in enumerate(prompts):
            text = clean_text(p)
            enc = self.tok(text, add_special_tokens=True, split_special_tokens=True,
                           return_offsets_mapping=True)
            ids = tuple(enc["input_ids"])
            if len(ids) >= self.max_tokens:
                raise ConfigError(f"{self.purpose}: a prompt is {len(ids)} tokens, at or over "
                                  f"llm.max_tokens={self.max_tokens}; shorten it (fewer titles)")
            if marks is None:
                readouts: tuple[int, ...] = (len(ids) - 1,)
            else:
                offsets = enc["offset_mapping"]
                readouts = tuple(_token_at(offsets, c, i) for c in marks[i])
            out.append(Inputs(ids, readouts))
        if self.split is not None:
            out = self._with_lower(prompts, out, on_chunk)
        return out

    def _with_lower(self, prompts: list[str], inputs: list[Inputs],
                    on_chunk: Callable[[int, int], None] | None) -> list[Inputs]:
        start = time.perf_counter()
        states: list[np.ndarray] = []
        for s in range(0, len(prompts), HIDDEN_CHUNK):
            part = prompts[s:s + HIDDEN_CHUNK]
            if self.llm is not None:
                states += self.llm.hidden(part, layer=self.split, model=self.model_name)
            else:
                states += self._lower_here(inputs[s:s + HIDDEN_CHUNK])
            if on_chunk is not None:
                on_chunk(min(s + HIDDEN_CHUNK, len(prompts)), len(prompts))
        self.lower_time_s += time.perf_counter() - start
        for x, h in zip(inputs, states, strict=True):
            if h.shape[0] != len(x.ids):
                raise ModelOutputError(f"{self.purpose}: the service's hidden states cover "
                                       f"{h.shape[0]} tokens of a {len(x.ids)}-token prompt "
                                       "(tokenizations differ)")
        return [Inputs(x.ids, x.readouts, h) for x, h in zip(inputs, states, strict=True)]

    @torch.no_grad()
    def _lower_here(self, inputs: list[Inputs]) -> list[np.ndarray]:
        ids, mask = self._pad([x.ids for x in inputs])
        with self.model.disable_adapter():
            h = lower(self.body, ids, mask, self.split).float().cpu().numpy()
        return [h[k, :len(x.ids)].copy() for k, x in enumerate(inputs)]

    def _pad(self, rows: list[tuple[int, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        return ids.to(self.device), mask.to(self.device)

    # ---- the forward pass ------------------------------------------------------------------------
    def log_odds(self, batch: list[Inputs]) -> torch.Tensor:
        """(B, R) ``logit(Yes) - logit(No)`` at each prompt's R readout tokens."""
        if len({len(x.readouts) for x in batch}) != 1:
            raise ValueError("a batch mixes prompts with different numbers of readouts")
        ids, mask = self._pad([x.ids for x in batch])
        cols = torch.tensor([x.readouts for x in batch], device=self.device)
        if self.split is None:
            hidden = self.body(input_ids=ids, attention_mask=mask).last_hidden_state
            picked = hidden[torch.arange(len(batch), device=self.device)[:, None], cols]
        else:
            low = torch.zeros((len(batch), mask.shape[1], batch[0].lower.shape[1]),
                              device=self.device)
            for k, x in enumerate(batch):
                low[k, :len(x.ids)] = torch.from_numpy(x.lower)
            picked = upper_at(self.body, low, mask, self.split, cols)  # (B, R, d)
        # the LM head runs at the readouts only
        w = self._head[self._yes_no]
        logits = picked @ w.T
        return (logits[..., 0] - logits[..., 1]).float()

    # ---- training --------------------------------------------------------------------------------
    def train(self, inputs: list[Inputs], targets: Sequence[int] | np.ndarray, loss: Loss,
              weights: Sequence[float] | np.ndarray | None = None, *,
              rng: np.random.Generator, epochs: int = 1, batch_size: int | None = None,
              on_batch: BatchCallback | None = None) -> list[float]:
        """LoRA-train on ``inputs`` with ``loss(log_odds, targets)``; examples may carry loss
        weights (a defense's 0 drops one). Returns each epoch's weighted mean loss. Batches
        come in ``rng``'s order and dropout draws from a torch stream seeded from ``rng``, so
        training is reproducible whatever ran before."""
        size = batch_size or self.batch_size
        y = torch.as_tensor(np.asarray(targets), device=self.device)
        w = torch.ones(len(inputs), device=self.device) if weights is None else \
            torch.as_tensor(np.asarray(weights, dtype=np.float32), device=self.device)
        if len(y) != len(inputs) or len(w) != len(inputs):
            raise ValueError(f"{len(inputs)} inputs, {len(y)} targets, {len(w)} weights")
        start, out = time.perf_counter(), []
        try:
            with _seeded(int(rng.integers(2**31 - 1)), self.device):
                self.model.train()
                for _ in range(epochs):
                    order = rng.permutation(len(inputs))
                    total, seen = 0.0, 0.0
                    for b in range(0, len(order), size):
                        idx = order[b:b + size]
                        sel = torch.as_tensor(idx, device=self.device)
                        per = loss(self.log_odds([inputs[i] for i in idx]), y[sel])
                        wb = w[sel]
                        batch_loss = (per * wb).sum() / wb.sum().clamp(min=1e-8)
                        self.opt.zero_grad()
                        batch_loss.backward()
                        self.opt.step()
                        self.tokens_trained += sum(len(inputs[i].ids) for i in idx)
                        total += float(batch_loss.detach()) * len(idx)
                        seen += len(idx)
                        if on_batch is not None:
                            on_batch(int(seen), len(order), total / seen)
                    out.append(total / max(seen, 1))
        finally:
            self.model.eval()
            self.train_time_s += time.perf_counter() - start
        return out

    # ---- scoring ---------------------------------------------------------------------------------
    @torch.no_grad()
    def scores(self, inputs: list[Inputs], batch_size: int | None = None) -> np.ndarray:
        """(n, R) log-odds; non-finite values fail loudly (a NaN would rank as a hit)."""
        size = batch_size or 2 * self.batch_size
        self.model.eval()
        parts = [self.log_odds(inputs[b:b + size]).cpu().numpy()
                 for b in range(0, len(inputs), size)]
        if not parts:
            return np.zeros((0, 1), dtype=np.float32)
        out = np.concatenate(parts)
        if not np.isfinite(out).all():
            raise ModelOutputError(f"llm.model: non-finite Yes/No log-odds ({self.purpose})")
        return out

    # ---- serving ---------------------------------------------------------------------------------
    def save_adapter(self, prefix: str, root: Path | None = None) -> tuple[str, str]:
        """Write the adapter as safetensors (the only format the service loads) under
        ``<prefix>-<hash of its weights>`` -> (name, folder). Naming by content means two
        different adapters never share a name in the backends' adapter registries, and the
        same weights saved twice are one folder."""
        root = Path(root) if root is not None else cache_root() / "adapters"
        tmp = root / f"tmp-{prefix}-{self.seed}-{time.time_ns()}"
        self.model.save_pretrained(str(tmp), safe_serialization=True)
        digest = hashlib.sha256((tmp / "adapter_model.safetensors").read_bytes()).hexdigest()
        name = f"{prefix}-{digest[:16]}"
        dest = root / name
        try:
            if dest.exists():
                raise FileExistsError(dest)
            tmp.rename(dest)
        except OSError:  # identical weights already saved (here or by another process)
            if not (dest / "adapter_model.safetensors").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        return name, str(dest)

    def load_weights(self, folder: str | Path) -> None:
        """Set the LoRA weights from a folder ``save_adapter`` wrote (a cached training)."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = load_file(str(Path(folder) / "adapter_model.safetensors"), device=self.device)
        set_peft_model_state_dict(self.model, state)
        self.model.eval()


def _token_at(offsets: Sequence[tuple[int, int]], char: int, prompt: int) -> int:
    """The token whose characters include ``char``."""
    for k, (a, b) in enumerate(offsets):
        if a <= char < b:
            return k
    raise ConfigError(f"prompt {prompt}: no token holds character {char} (readout mark)")
