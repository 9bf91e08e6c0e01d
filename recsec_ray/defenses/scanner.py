"""P-Scanner's scanner: the base LLM plus a LoRA adapter that answers "does this title carry a
trigger?" with Yes or No.

Trained in-process as a causal LM, loss on the answer token only (the logits at the prompt's
last position against " Yes" / " No", exactly what ``LLMClient.score`` reads back later), on
contrastive pairs: the same clean title once as is (No) and once with a synthetic trigger (Yes),
so the only difference the model can latch onto is the trigger. The adapter is saved as
safetensors and served by the shared LLM service; saving names it by the hash of its weights,
so two different adapters can never share a name in the backends' adapter registries.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from ..llm.backend import clean_text
from ..llm.models import cache_root, local_folder, offline_env, resolve_model
from ..llm.prompts import YES_NO, pscanner_prompt

CHOICES = YES_NO  # (" Yes", " No"): one token each in SmolLM2


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
    def __init__(self, model_name: str, seed: int, *, device: str = "cpu", r: int = 8,
                 lr: float = 2e-3, top_layers: int = 8):
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.seed, self.lr, self.device = seed, lr, device
        folder = local_folder(resolve_model(model_name))
        with offline_env():
            self.tok = AutoTokenizer.from_pretrained(folder)
            base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        self.tok.padding_side = "right"  # as the service scores: right padding, last real slot
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        ids = [self.tok(c, add_special_tokens=False)["input_ids"] for c in CHOICES]
        self.answer_ids = [i[0] for i in ids]  # " Yes" / " No" are single tokens in SmolLM2
        torch.manual_seed(seed)
        # LoRA on the top layers only: backward then stops there, about halving the CPU cost
        # of a step, and the question (does the quoted title end oddly?) is a late-layer one
        n_layers = int(base.config.num_hidden_layers)
        layers = list(range(max(0, n_layers - top_layers), n_layers))
        cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.05,
                         target_modules=["q_proj", "v_proj"], layers_to_transform=layers,
                         task_type="CAUSAL_LM")
        self.model = get_peft_model(base, cfg).to(device)
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                     lr=lr)
        self.tokens_trained = 0
        self.train_time_s = 0.0

    def _batch(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        # tokenized as the service does (llm/backend.py): lone surrogates replaced, special-token
        # spellings inside titles kept as plain text
        enc = self.tok([clean_text(p) for p in prompts], return_tensors="pt", padding=True,
                       split_special_tokens=True)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _last_logits(self, prompts: list[str]) -> torch.Tensor:
        """Next-token logits at each prompt's last real token (B, vocab)."""
        enc = self._batch(prompts)
        base = self.model.get_base_model()  # LoRA layers live inside it
        hidden = base.get_decoder()(**enc).last_hidden_state
        last = enc["attention_mask"].sum(1) - 1
        # the LM head only where the answer is predicted: a full (B, L, vocab) tensor is waste
        return base.get_output_embeddings()(hidden[torch.arange(len(prompts)), last])

    def train(self, prompts: list[str], labels: np.ndarray, *, epochs: int = 1,
              batch_size: int = 16) -> float:
        """Cross-entropy of the answer token over the full vocabulary; returns the mean loss."""
        rng = np.random.default_rng([self.seed, 0x5CA7, self.tokens_trained])
        gen = torch.Generator().manual_seed(int(rng.integers(2**31 - 1)))
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        start, total, steps = time.perf_counter(), 0.0, 0
        self.model.train()
        targets = torch.tensor([self.answer_ids[0] if y else self.answer_ids[1]
                                for y in labels])
        for _ in range(epochs):
            order = rng.permutation(len(prompts))
            for b in range(0, len(order), batch_size):
                idx = order[b:b + batch_size]
                batch = [prompts[i] for i in idx]
                logits = self._last_logits(batch)
                loss = torch.nn.functional.cross_entropy(logits, targets[idx].to(self.device))
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                self.tokens_trained += sum(len(self.tok(p)["input_ids"]) for p in batch)
                total, steps = total + loss.item(), steps + 1
        self.model.eval()
        self.train_time_s += time.perf_counter() - start
        return total / max(steps, 1)

    @torch.no_grad()
    def p_yes(self, prompts: list[str], batch_size: int = 32) -> np.ndarray:
        """In-process P(Yes | Yes or No), used between rounds (final scores go through the
        shared service)."""
        self.model.eval()
        out = []
        for b in range(0, len(prompts), batch_size):
            logits = self._last_logits(prompts[b:b + batch_size])[:, self.answer_ids].float()
            out.append(torch.softmax(logits, dim=-1)[:, 0].cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def save(self, root: Path | None = None) -> tuple[str, str]:
        """Write the adapter (safetensors) under a content-derived name -> (name, folder)."""
        root = Path(root) if root is not None else cache_root() / "adapters"
        tmp = root / f"tmp-{self.seed}-{time.time_ns()}"
        self.model.save_pretrained(str(tmp), safe_serialization=True)
        digest = hashlib.sha256((tmp / "adapter_model.safetensors").read_bytes()).hexdigest()
        name = f"pscanner-{digest[:16]}"
        dest = root / name
        if dest.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)  # identical weights already saved
        else:
            tmp.rename(dest)
        return name, str(dest)
