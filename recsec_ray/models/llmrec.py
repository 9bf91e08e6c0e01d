"""The LLM recommender victim (TALLRec / LLaRA style): a causal LM + LoRA picks the next item.

Prompt = a user's recent titles (``llmrec_history``, oldest first) and a lettered candidate list
(``llmrec_candidates``: the true next item among random negatives, shuffled). The model's
answer is read in ONE forward pass: the logits of the label tokens (" A", " B", ...) at the
answer position, so scoring never generates and never has to parse free text. Training is the
same pass with cross-entropy over the whole vocabulary on the correct label token (the LM loss
TALLRec uses), which also teaches the model to answer with a label at all: ``valid_ratio`` is
the share of evaluation prompts whose unrestricted argmax token is one of the list's labels.

Budget (DESIGN §5): SmolLM2-135M LoRA-trains ~150 tokens/s on this 2-core CPU, so a trial
trains on ``llmrec_train_users`` users (one example each: the last training item after its
history) and evaluates on ``llmrec_eval_users`` real users; titles are cut to ``TITLE_CHARS``.
The subset keeps the poisoned share: real and fake users are drawn in proportion to their
counts (stratified), so a 1% attack stays 1% of the subset. On a GPU raise both sizes.

BadRec (``asr``): the same evaluation lists, with the trigger appended to one wrong candidate
(seeded); success = the model picks it. Negatives exclude the training-time triggered items in
both evaluations, so clean HR@1 and ASR@1 differ only by the trigger.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..config import ModelConfig
from ..data.sequences import SequenceData
from ..errors import ConfigError, ModelOutputError

TITLE_CHARS = 64  # long enough that a sentence trigger at a title's end survives the cut


def _cut(title: str) -> str:
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"


class LLMRec:
    """Causal LM + LoRA next-item chooser; ``fit`` then ``evaluate`` / ``asr``."""

    def __init__(self, cfg: ModelConfig, *, model_name: str = "smollm2", seed: int = 0,
                 device: str = "cpu", batch_size: int = 8):
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..llm.models import local_folder, offline_env, resolve_model
        from ..llm.prompts import llmrec_choices

        spec = resolve_model(model_name)
        if spec.kind != "causal":
            raise ConfigError(f"llm.model: {model_name!r} is not a causal LM; llmrec needs one")
        folder = local_folder(spec)
        with offline_env():
            self.tok = AutoTokenizer.from_pretrained(folder)
            base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        torch.manual_seed(seed)
        lora = LoraConfig(r=cfg.llmrec_lora_r, lora_alpha=2 * cfg.llmrec_lora_r,
                          lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                          task_type="CAUSAL_LM")
        self.model = get_peft_model(base, lora).to(device)
        self.cfg, self.seed, self.device, self.batch_size = cfg, seed, device, batch_size
        self.n_cand = cfg.llmrec_candidates
        ids = [self.tok.encode(c, add_special_tokens=False) for c in llmrec_choices(self.n_cand)]
        if any(len(i) != 1 for i in ids):
            raise ConfigError(f"llm.model: {model_name!r} does not encode each answer label as "
                              "one token; llmrec needs that for one-pass scoring")
        self.label_ids = torch.tensor([i[0] for i in ids], device=device)

    # ---- prompts and one-pass scoring ----------------------------------------------------------
    def prompt(self, titles: list[str], history: np.ndarray, cands: np.ndarray,
               override: dict[int, str] | None = None) -> str:
        from ..llm.prompts import llmrec_prompt

        def title(i: int) -> str:
            return _cut(override[i] if override and i in override else titles[i])

        return llmrec_prompt([title(int(i)) for i in history], [title(int(i)) for i in cands])

    def _last_logits(self, prompts: list[str]):
        enc = self.tok(prompts, return_tensors="pt", padding=True).to(self.device)
        out = self.model(**enc)
        return out.logits[:, -1, :]

    def label_scores(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(n, C) label logits and (n,) whether the unrestricted argmax is a label."""
        import torch

        self.model.eval()
        scores, valid = [], []
        with torch.no_grad():
            for b in range(0, len(prompts), self.batch_size):
                logits = self._last_logits(prompts[b:b + self.batch_size]).float()
                lab = logits[:, self.label_ids]
                if not torch.isfinite(lab).all():
                    raise ModelOutputError("llmrec: non-finite label logits")
                scores.append(lab.cpu().numpy())
                valid.append(torch.isin(logits.argmax(-1), self.label_ids).cpu().numpy())
        if not scores:
            return np.zeros((0, self.n_cand)), np.zeros(0, dtype=bool)
        return np.concatenate(scores), np.concatenate(valid)

    # ---- examples --------------------------------------------------------------------------------
    def _example(self, data: SequenceData, seq: np.ndarray, target: int, rng: np.random.Generator,
                 banned: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        history = seq[-self.cfg.llmrec_history:]
        mask = banned.copy()
        mask[seq] = True
        mask[target] = True
        free = np.flatnonzero(~mask)
        if len(free) < self.n_cand - 1:
            raise ConfigError(f"model.llmrec_candidates: {self.n_cand} candidates but only "
                              f"{len(free)} items are free for a user")
        negs = rng.choice(free, size=self.n_cand - 1, replace=False)
        cands = rng.permutation(np.concatenate([[target], negs]))
        return history, cands, int(np.flatnonzero(cands == target)[0])

    def train_users(self, n_users: int, n_real: int, usable: np.ndarray) -> np.ndarray:
        """Stratified subset: real and fake users in proportion (see the module docstring)."""
        rng = np.random.default_rng([self.seed, 0x11AC])
        real = np.flatnonzero(usable[:n_real])
        fake = np.flatnonzero(usable[n_real:]) + n_real
        size = min(self.cfg.llmrec_train_users, len(real) + len(fake))
        n_fake = round(size * len(fake) / max(len(real) + len(fake), 1))
        pick = np.concatenate([rng.choice(real, size=min(size - n_fake, len(real)),
                                          replace=False),
                               rng.choice(fake, size=min(n_fake, len(fake)), replace=False)])
        return rng.permutation(pick)

    # ---- training ---------------------------------------------------------------------------------
    def fit(self, data: SequenceData, n_real: int, *, user_weights: np.ndarray | None = None,
            progress: bool = False,
            on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
        """LoRA-train on the last training item of a user subset; weights scale each user's
        loss (a defense's 0 drops the user)."""
        import torch
        import torch.nn.functional as F

        weights = np.ones(data.n_users) if user_weights is None else \
            np.asarray(user_weights, dtype=np.float64)
        usable = (weights > 0) & np.array([len(s) >= 4 for s in data.seqs])
        users = self.train_users(data.n_users, n_real, usable)
        rng = np.random.default_rng([self.seed, 0x7EA1])
        banned = np.zeros(data.n_items + 1, dtype=bool)
        banned[0] = True
        examples = []
        for u in users:
            train = data.train_seq(int(u))
            hist, cands, label = self._example(data, train[:-1], int(train[-1]), rng, banned)
            examples.append((self.prompt(data.titles, hist, cands), label, float(weights[u])))
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.cfg.llmrec_lr)
        history = []
        for epoch in range(self.cfg.llmrec_epochs):
            self.model.train()
            t0, total, seen = time.time(), 0.0, 0
            order = rng.permutation(len(examples))
            for b in range(0, len(order), self.batch_size):
                chunk = [examples[i] for i in order[b:b + self.batch_size]]
                logits = self._last_logits([c[0] for c in chunk])
                gold = self.label_ids[torch.tensor([c[1] for c in chunk], device=self.device)]
                w = torch.tensor([c[2] for c in chunk], device=self.device)
                loss = (F.cross_entropy(logits.float(), gold, reduction="none") * w).sum() \
                    / w.sum().clamp(min=1e-8)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(chunk)
                seen += len(chunk)
                if progress:
                    print(f"llmrec epoch {epoch} {seen}/{len(examples)} loss {total / seen:.4f}",
                          flush=True)
            row = {"epoch": epoch, "loss": total / max(seen, 1), "time_s": time.time() - t0,
                   "train_users": len(examples)}
            history.append(row)
            if on_epoch:
                on_epoch(row)
        return history

    # ---- evaluation -------------------------------------------------------------------------------
    def eval_cases(self, data: SequenceData, n_real: int, part: str = "test",
                   exclude: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """The seeded evaluation lists: (history, candidates, index of the true item)."""
        rng = np.random.default_rng([self.seed, 0xE7A1])
        users = np.arange(n_real)
        if len(users) > self.cfg.llmrec_eval_users:
            users = np.sort(rng.choice(users, size=self.cfg.llmrec_eval_users, replace=False))
        banned = np.zeros(data.n_items + 1, dtype=bool)
        banned[0] = True
        if exclude is not None:
            banned[np.asarray(exclude, dtype=np.int64)] = True
        cases = []
        for u in users:
            seq = data.seqs[int(u)]
            hist = seq[:-1] if part == "test" else seq[:-2]
            target = int(seq[-1] if part == "test" else seq[-2])
            cases.append(self._example(data, hist, target, rng, banned))
        return cases

    def evaluate(self, data: SequenceData, n_real: int, *, part: str = "test",
                 exclude: np.ndarray | None = None, ks: tuple[int, ...] = (1, 3)
                 ) -> dict[str, float]:
        """HR@K over the candidate list and the valid-answer ratio on real users."""
        cases = self.eval_cases(data, n_real, part, exclude)
        scores, valid = self.label_scores([self.prompt(data.titles, h, c) for h, c, _ in cases])
        gold = np.array([g for _, _, g in cases])
        g = scores[np.arange(len(gold)), gold][:, None]
        # ties rank the smaller index first, as in ``metrics``: a model that cannot tell the
        # labels apart earns no hits from it
        ahead = (scores > g) | ((scores == g) & (np.arange(scores.shape[1]) < gold[:, None]))
        rank = ahead.sum(1) + 1
        out = {f"hr@{k}": float(np.mean(rank <= k)) for k in ks}
        out["valid_ratio"] = float(np.mean(valid))
        return out

    def asr(self, data: SequenceData, n_real: int, trigger: str, *, exclude: np.ndarray | None
            = None, part: str = "test") -> dict[str, float]:
        """Share of evaluation lists where the wrong candidate given the trigger is picked."""
        from ..attacks.badrec import apply_trigger

        cases = self.eval_cases(data, n_real, part, exclude)
        rng = np.random.default_rng([self.seed, 0xA5A])
        prompts, pushed = [], []
        for hist, cands, gold in cases:
            wrong = [j for j in range(len(cands)) if j != gold]
            j = int(rng.choice(wrong))
            item = int(cands[j])
            prompts.append(self.prompt(data.titles, hist, cands,
                                       {item: apply_trigger(data.titles[item], trigger)}))
            pushed.append(j)
        scores, _ = self.label_scores(prompts)
        return {"asr@1": float(np.mean(scores.argmax(1) == np.array(pushed)))}


def train_and_evaluate(cfg, poisoned, sanitation, llm=None, *, device: str = "cpu",
                       progress: bool = False,
                       on_epoch: Callable[[dict], None] | None = None) -> dict[str, float]:
    """The job's llmrec branch: train on the sanitised poisoned data, then HR@1/HR@3 and
    valid_ratio on candidate lists of real users, plus ASR@1 when the attack left a trigger.

    ``llm`` is unused: the victim's LoRA training needs the weights in-process (the shared
    service serves frozen models), so the base model named by ``cfg.llm.model`` is loaded here.
    """
    from ..job import apply_sanitation

    start = time.perf_counter()
    data = apply_sanitation(poisoned.data, sanitation)
    weights = sanitation.user_weights * ~sanitation.removed_users
    rec = LLMRec(cfg.model, model_name=cfg.llm.model, seed=cfg.seed, device=device)
    history = rec.fit(data, poisoned.n_real, user_weights=weights, progress=progress,
                      on_epoch=on_epoch)
    out: dict[str, float] = {"time_train_s": time.perf_counter() - start,
                             "llmrec_train_users": float(history[-1]["train_users"]),
                             "llmrec_eval_users": float(min(cfg.model.llmrec_eval_users,
                                                            poisoned.n_real))}
    start = time.perf_counter()
    # real users' own histories (as for the other backbones), titles as the defense left them;
    # negatives never include a training-time triggered item
    real = poisoned.data.with_titles(data.titles)
    exclude = np.flatnonzero(poisoned.poisoned_items) if poisoned.trigger is not None else None
    out.update(rec.evaluate(real, poisoned.n_real, exclude=exclude))
    if poisoned.trigger is not None:
        out.update(rec.asr(real, poisoned.n_real, poisoned.trigger, exclude=exclude))
    out["time_eval_s"] = time.perf_counter() - start
    return out
