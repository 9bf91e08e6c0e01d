"""The LLM recommender victim (TALLRec / LLaRA style): a causal LM + LoRA picks the next item.

Prompt = a user's recent titles (``llmrec_history``, oldest first) and a lettered candidate list
(``llmrec_candidates``: the true next item among random negatives, shuffled). The model's
answer is read in ONE forward pass: the logits of the label tokens (" A", " B", ...) at the
answer position, so scoring never generates and never has to parse free text. The model is the
project's one LoRA single-token classifier (``llm.lora_head``, shared with P-Scanner's
scanner): training is the same pass with cross-entropy over the whole vocabulary on the correct
label token (the LM loss TALLRec uses), which also teaches the model to answer with a label at
all: ``valid_ratio`` is the share of evaluation prompts whose unrestricted argmax token is one
of the list's labels.

Budget (DESIGN §5): LoRA training on a CPU costs a full forward and backward pass per example,
so a trial trains on ``llmrec_train_users`` users (one example each: the last training item
after its history) and evaluates on ``llmrec_eval_users`` real users; titles are cut to
``TITLE_CHARS``. The subset keeps the poisoned share: real and fake users are drawn in
proportion to their counts (stratified), so a 1% attack stays 1% of the subset. On a GPU
raise both sizes.

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
from ..data.triggers import apply_trigger
from ..errors import ConfigError
from .hooks import TrainHook
from .victim import FitResult, VictimContext

TITLE_CHARS = 64  # long enough that a sentence trigger at a title's end survives the cut


def _cut(title: str) -> str:
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"


class LLMRec:
    """Causal LM + LoRA next-item chooser; ``fit`` then ``evaluate`` / ``asr``."""

    def __init__(self, cfg: ModelConfig, *, model_name: str = "smollm2", seed: int = 0,
                 device: str = "cpu", batch_size: int = 8, top_layers: int | None = None):
        """``top_layers``: LoRA on that many top layers only (None: all; see ``lora_head``)."""
        from ..llm.lora_head import LoraClassifier
        from ..llm.prompts import llmrec_choices

        self.cfg, self.seed, self.device, self.batch_size = cfg, seed, device, batch_size
        self.n_cand = cfg.llmrec_candidates
        self.head = LoraClassifier(model_name, llmrec_choices(self.n_cand), seed=seed,
                                   purpose="llmrec", device=device, r=cfg.llmrec_lora_r,
                                   lr=cfg.llmrec_lr, top_layers=top_layers,
                                   batch_size=batch_size)

    # ---- prompts and one-pass scoring ----------------------------------------------------------
    def prompt(self, titles: list[str], history: np.ndarray, cands: np.ndarray,
               override: dict[int, str] | None = None) -> str:
        from ..llm.prompts import llmrec_prompt

        def title(i: int) -> str:
            return _cut(override[i] if override and i in override else titles[i])

        return llmrec_prompt([title(int(i)) for i in history], [title(int(i)) for i in cands])

    def label_scores(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(n, C) label logits and (n,) whether the unrestricted argmax is a label."""
        return self.head.label_scores(prompts)

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
        history = []
        for epoch in range(self.cfg.llmrec_epochs):
            t0 = time.time()

            def show(seen: int, n: int, loss: float, epoch: int = epoch) -> None:
                print(f"llmrec epoch {epoch} {seen}/{n} loss {loss:.4f}", flush=True)

            [loss] = self.head.train([e[0] for e in examples], [e[1] for e in examples],
                                     [e[2] for e in examples], rng=rng, epochs=1,
                                     on_batch=show if progress else None)
            row = {"epoch": epoch, "loss": loss, "time_s": time.time() - t0,
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
        import torch

        from ..metrics import ranks

        cases = self.eval_cases(data, n_real, part, exclude)
        scores, valid = self.label_scores([self.prompt(data.titles, h, c) for h, c, _ in cases])
        gold = np.array([g for _, _, g in cases])
        # the one tie rule of ``metrics.ranks``: a model that cannot tell labels apart earns no
        # hits from it
        rank = ranks(torch.from_numpy(scores), torch.from_numpy(gold)).numpy()
        out = {f"hr@{k}": float(np.mean(rank <= k)) for k in ks}
        out["valid_ratio"] = float(np.mean(valid))
        return out

    def asr(self, data: SequenceData, n_real: int, trigger: str, *, exclude: np.ndarray | None
            = None, part: str = "test") -> dict[str, float]:
        """Share of evaluation lists where the wrong candidate given the trigger is picked."""
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


class LLMRecVictim:
    """The ``Victim`` protocol over ``LLMRec``: HR@1/HR@3 and valid_ratio on candidate lists of
    real users, ASR@1 with a trigger on a wrong candidate.

    The LoRA training needs the weights in-process (the shared service serves frozen models),
    so the base model named by ``cfg.llm.model`` is loaded here.
    """

    def __init__(self, ctx: VictimContext):
        self.ctx, self.cfg = ctx, ctx.cfg
        self.rec: LLMRec | None = None

    def fit(self, data: SequenceData, weights: np.ndarray,
            hook: TrainHook | None = None) -> FitResult:
        if hook is not None:
            raise ConfigError("defense.name: llmrec takes no training hook (its registry entry "
                              "declares no item table)")
        self.rec = LLMRec(self.cfg.model, model_name=self.cfg.llm.model, seed=self.cfg.seed,
                          device=self.ctx.device)
        history = self.rec.fit(data, self.ctx.n_real, user_weights=weights,
                               progress=self.ctx.progress, on_epoch=self.ctx.on_epoch)
        return FitResult(history, {
            "llmrec_train_users": float(history[-1]["train_users"]),
            "llmrec_eval_users": float(min(self.cfg.model.llmrec_eval_users, self.ctx.n_real))})

    def evaluate(self, data: SequenceData, targets: np.ndarray,
                 exclude: np.ndarray | None = None,
                 per_target: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        assert self.rec is not None, "fit first"  # candidate lists: no per-target ranking
        return self.rec.evaluate(data, self.ctx.n_real, exclude=exclude)

    def backdoor_asr(self, data: SequenceData, trigger: str,
                     exclude: np.ndarray | None = None) -> dict[str, float]:
        assert self.rec is not None, "fit first"
        return self.rec.asr(data, self.ctx.n_real, trigger, exclude=exclude)
