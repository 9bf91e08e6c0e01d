"""One LoRA single-token classifier: a causal LM + LoRA whose answer is one label token.

Both in-process LoRA users ask a question whose answer is ONE token: the LLM recommender
(" A", " B", ...: which candidate comes next) and P-Scanner's scanner (" Yes" / " No": does
the quoted title carry a trigger). So both are this class with different labels; neither
imports the other (a model must not import a defense).

Conventions, the same as the shared LLM service's ``score`` (``hf_backend``), so an adapter
trained here answers the same when the service serves it:

- prompts are tokenized as the service does (``backend.clean_text``, the model's own special
  tokens, special-token spellings inside titles kept as plain text);
- right padding, and the logits are read at each row's LAST REAL token. With left padding the
  position ids of a short prompt shift with its batch-mates' lengths unless they are
  corrected, so its answer would depend on how it was batched;
- the LM head runs at that position only (a (batch, length, vocabulary) tensor is waste).

Training is cross-entropy of the answer token over the whole vocabulary (the LM loss TALLRec
uses), which also teaches the model to answer with a label at all; examples may carry loss
weights (a defense's 0 drops one). ``label_scores`` returns the label logits and whether the
unrestricted argmax is a label at all.

The cost lies in the body's forward (``last_hidden``, the one place that runs it). With LoRA
on the top layers only (``top_layers``) the lower layers' output is a pure function of the
prompt: a later version can compute it once per prompt (or fetch it from the shared service),
cache it, and run only the top layers here by replacing ``last_hidden`` alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import ConfigError, ModelOutputError
from ..paths import cache_root
from .backend import clean_text
from .models import local_folder, offline_env, resolve_model

# (examples seen this epoch, examples in the epoch, running mean loss) after each step
BatchCallback = Callable[[int, int, float], None]


@contextlib.contextmanager
def _seeded(seed: int, device: str) -> Iterator[None]:
    """Torch randomness (LoRA init, dropout) from ``seed``, the caller's stream restored after."""
    devices = [torch.device(device)] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class LoraClassifier:
    """Base causal LM + PEFT LoRA, answering one of ``labels`` (each one token)."""

    def __init__(self, model_name: str, labels: Sequence[str], *, seed: int, purpose: str,
                 device: str = "cpu", r: int = 8, alpha: int | None = None,
                 dropout: float = 0.05, target_modules: Sequence[str] = ("q_proj", "v_proj"),
                 top_layers: int | None = None, lr: float = 1e-3, batch_size: int = 16):
        """``purpose`` names the user in error messages; ``top_layers``: LoRA on that many
        top decoder layers only (None: every layer); ``alpha`` defaults to ``2 * r``."""
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
        self.tok.padding_side = "right"  # read at the last real slot, as the service does
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        ids = [self.tok(c, add_special_tokens=False)["input_ids"] for c in labels]
        bad = [c for c, i in zip(labels, ids, strict=True) if len(i) != 1]
        if bad or len({i[0] for i in ids}) != len(ids):
            raise ConfigError(f"llm.model: {model_name!r} does not encode each answer label "
                              f"as one distinct token (not: {bad}); {purpose} reads a "
                              "one-token answer")
        self.labels = list(labels)
        self.seed, self.device, self.batch_size = seed, device, batch_size
        self.label_ids = torch.tensor([i[0] for i in ids], device=device)
        n_layers = int(base.config.num_hidden_layers)
        layers = None if top_layers is None else \
            list(range(max(0, n_layers - top_layers), n_layers))
        cfg = LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r,
                         lora_dropout=dropout, target_modules=list(target_modules),
                         layers_to_transform=layers, task_type="CAUSAL_LM")
        with _seeded(seed, device):  # LoRA's random init
            self.model = get_peft_model(base, cfg).to(device)
        self.model.eval()
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                     lr=lr)
        self.tokens_trained = 0
        self.train_time_s = 0.0

    # ---- the forward pass ------------------------------------------------------------------------
    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tok([clean_text(p) for p in prompts], return_tensors="pt", padding=True,
                       split_special_tokens=True)
        return {k: v.to(self.device) for k, v in enc.items()}

    def last_hidden(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        """The final hidden state at each row's last real token (B, d)."""
        body = self.model.get_base_model().get_decoder()  # LoRA layers live inside it
        hidden = body(**enc).last_hidden_state
        last = enc["attention_mask"].sum(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def last_logits(self, prompts: list[str]) -> tuple[torch.Tensor, int]:
        """Next-token logits at each prompt's last real token (B, vocabulary), and the
        number of real tokens read."""
        enc = self.encode(prompts)
        head = self.model.get_base_model().get_output_embeddings()
        return head(self.last_hidden(enc)).float(), int(enc["attention_mask"].sum())

    # ---- training --------------------------------------------------------------------------------
    def train(self, prompts: list[str], targets: Sequence[int] | np.ndarray,
              weights: Sequence[float] | np.ndarray | None = None, *, rng: np.random.Generator,
              epochs: int = 1, batch_size: int | None = None,
              on_batch: BatchCallback | None = None) -> list[float]:
        """LoRA-train on (prompt, index of its label) pairs; returns each epoch's mean loss
        (weighted by examples). Batches are drawn in ``rng``'s order; dropout draws from a
        torch stream seeded from ``rng``, so training is reproducible whatever ran before."""
        size = batch_size or self.batch_size
        gold = self.label_ids[torch.as_tensor(np.asarray(targets, dtype=np.int64),
                                              device=self.device)]
        w = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float32),
                                                         device=self.device)
        if len(gold) != len(prompts) or (w is not None and len(w) != len(prompts)):
            raise ValueError(f"{len(prompts)} prompts, {len(gold)} targets, "
                             f"{None if w is None else len(w)} weights")
        start, out = time.perf_counter(), []
        try:
            with _seeded(int(rng.integers(2**31 - 1)), self.device):
                self.model.train()
                for _ in range(epochs):
                    order = rng.permutation(len(prompts))
                    total, seen = 0.0, 0
                    for b in range(0, len(order), size):
                        idx = order[b:b + size]
                        sel = torch.as_tensor(idx, device=self.device)
                        logits, n_tokens = self.last_logits([prompts[i] for i in idx])
                        ce = F.cross_entropy(logits, gold[sel], reduction="none")
                        if w is None:
                            loss = ce.mean()
                        else:
                            loss = (ce * w[sel]).sum() / w[sel].sum().clamp(min=1e-8)
                        self.opt.zero_grad()
                        loss.backward()
                        self.opt.step()
                        self.tokens_trained += n_tokens
                        total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
                        if on_batch is not None:
                            on_batch(seen, len(order), total / seen)
                    out.append(total / max(seen, 1))
        finally:
            self.model.eval()
            self.train_time_s += time.perf_counter() - start
        return out

    # ---- scoring ---------------------------------------------------------------------------------
    @torch.no_grad()
    def label_scores(self, prompts: list[str], batch_size: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(n, labels) label logits and (n,) whether the unrestricted argmax is a label."""
        size = batch_size or self.batch_size
        self.model.eval()
        scores, valid = [], []
        for b in range(0, len(prompts), size):
            logits, _ = self.last_logits(prompts[b:b + size])
            lab = logits[:, self.label_ids]
            if not torch.isfinite(lab).all():
                raise ModelOutputError(f"llm.model: non-finite label logits ({self.labels})")
            scores.append(lab.cpu().numpy())
            valid.append(torch.isin(logits.argmax(-1), self.label_ids).cpu().numpy())
        if not scores:
            return np.zeros((0, len(self.labels)), dtype=np.float32), np.zeros(0, dtype=bool)
        return np.concatenate(scores), np.concatenate(valid)

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
