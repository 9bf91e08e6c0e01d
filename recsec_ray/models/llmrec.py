"""The LLM recommender victim (TALLRec / LLaRA style): a causal LM + LoRA judges a candidate list.

Prompt = a user's ``llmrec_history`` most recent titles (oldest first) and the candidate list,
one quoted title per line (``prompts.llmrec_prompt``; long titles cut in the middle so an
appended trigger survives). The model answers for every candidate in ONE forward pass:
``logit(" Yes") - logit(" No")`` read at that candidate's closing quote, TALLRec's "will the
user like it?" asked of each candidate where its own tokens are. Reading one answer token at
the end of the list instead (which of A-J?) left SmolLM2-135M at chance: one position had to
find the matching candidate among ten. Here popularity and a trigger are local features of a
candidate, and training is a listwise softmax over the candidates' log-odds.

Training examples: sliding windows over each user's training part (the last
``llmrec_windows`` items, each after its own history, among ``llmrec_train_candidates``
candidates: fewer than the evaluation lists', a sampled listwise softmax that costs two thirds
of the tokens), every user with a positive weight,
real and injected alike, capped at ``llmrec_examples`` (whole window rounds first: every
user's last item, then second-to-last, ...; the last partial round keeps users by a seeded
per-user key, so adding fake users displaces few real examples). Negatives are drawn per user
and window from its own seeded stream and never include the user's items. By default
(``llmrec_negatives='any'``) triggered items are negatives as often as chance makes them
(the share of training lists holding one is ``llmrec_triggered_negatives``); ``'clean'``
never samples them, which leaves a triggered title only ever a positive and so teaches the
trigger with no fake user (measured: sentence trigger, asr@1 0.935 at a 0 % share, 0.005
with 'any').

Cost (DESIGN §5): LoRA on the top ``llmrec_top_layers`` layers; the lower layers' states come
from the shared LLM service's cached ``hidden`` call (``llm.lora_head``), computed once per
prompt for every trial of a sweep; a step runs the top layers only. Evaluation uses the common
candidate-list protocol (``candidates``): the same seeded lists as every other victim.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from ..candidates import Case, draw_list, for_job, list_asr, list_metrics
from ..config import JobConfig, ModelConfig
from ..data.sequences import SequenceData
from ..data.triggers import apply_trigger
from ..errors import ConfigError
from ..llm.lora_head import Inputs, LoraReader
from ..llm.prompts import llmrec_prompt
from .hooks import TrainHook
from .victim import FitResult, VictimContext

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def windows(train_len: int, n_windows: int) -> int:
    """Examples a training part of ``train_len`` items gives: targets need a history."""
    return max(0, min(n_windows, train_len - 1))


def count_examples(cfg: ModelConfig, train_lengths: list[int]) -> int:
    """Training examples of users with these training-part lengths (BadRec's budget unit)."""
    return min(cfg.llmrec_examples,
               sum(windows(n, cfg.llmrec_windows) for n in train_lengths))


def _listwise(s: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(s, gold, reduction="none")


class LLMRec:
    """Causal LM + LoRA list judge; ``fit`` then ``scores`` on cases."""

    def __init__(self, cfg: JobConfig, *, n_real: int, llm=None, device: str = "cpu",
                 progress: bool = False):
        """``n_real``: users at or above it are injected (counted in the stats only)."""
        m = cfg.model
        self.cfg, self.seed, self.progress, self.n_real = cfg, cfg.seed, progress, n_real
        self.reader = LoraReader(cfg.llm.model, seed=cfg.seed, purpose="llmrec", device=device,
                                 r=m.llmrec_lora_r, lr=m.llmrec_lr, top_layers=m.llmrec_top_layers,
                                 target_modules=LORA_TARGETS, batch_size=m.llmrec_batch, llm=llm,
                                 max_tokens=cfg.llm.max_tokens)
        self.counts: np.ndarray | None = None  # training counts (pop_hr@1 on the same lists)
        self.stats: dict[str, float] = {}

    # ---- prompts -----------------------------------------------------------------------------
    def prompts(self, titles: list[str], rows: list[tuple[np.ndarray, np.ndarray]],
                override: list[dict[int, str]] | None = None
                ) -> tuple[list[str], list[list[int]]]:
        """Prompts of (history, candidates) rows and their readout marks; ``override[i]``
        replaces titles of row i."""
        h = self.cfg.model.llmrec_history
        prompts, marks = [], []
        for i, (hist, cands) in enumerate(rows):
            o = override[i] if override else {}
            text, mk = llmrec_prompt([o.get(int(j), titles[int(j)]) for j in hist[-h:]],
                                     [o.get(int(j), titles[int(j)]) for j in cands])
            prompts.append(text)
            marks.append(mk)
        return prompts, marks

    def inputs(self, titles: list[str], rows: list[tuple[np.ndarray, np.ndarray]],
               override: list[dict[int, str]] | None = None, what: str = "prompts"
               ) -> list[Inputs]:
        """Model inputs of (history, candidates) rows (see ``prompts``)."""
        prompts, marks = self.prompts(titles, rows, override)

        def show(done: int, total: int) -> None:
            print(f"llmrec {what}: lower-layer states {done}/{total}", flush=True)

        return self.reader.encode(prompts, marks, on_chunk=show if self.progress else None)

    def scores(self, titles: list[str], cs: list[Case], trigger: str | None = None
               ) -> np.ndarray:
        """(n, C) log-odds on the cases; with ``trigger`` appended to each pushed candidate."""
        override = None
        if trigger is not None:
            override = [{int(c.candidates[c.pushed]):
                         apply_trigger(titles[int(c.candidates[c.pushed])], trigger)}
                        for c in cs]
        rows = [(c.history, c.candidates) for c in cs]
        what = "triggered lists" if trigger else "lists"
        return self.reader.scores(self.inputs(titles, rows, override, what)).astype(np.float64)

    # ---- training ----------------------------------------------------------------------------
    def examples(self, data: SequenceData, weights: np.ndarray, protected: np.ndarray
                 ) -> list[tuple[int, np.ndarray, np.ndarray, int]]:
        """(user, history, candidates, gold) per training example (see the module docstring)."""
        m = self.cfg.model
        banned = np.zeros(data.n_items + 1, dtype=bool)
        if m.llmrec_negatives == "clean" and len(protected):
            banned[protected] = True
        key = np.random.default_rng([self.seed, 0x5E1]).random(data.n_users)
        picked: list[tuple[int, int]] = []  # (user, window)
        for w in range(m.llmrec_windows):
            rnd = [u for u in range(data.n_users)
                   if weights[u] > 0 and windows(len(data.train_seq(u)), m.llmrec_windows) > w]
            room = m.llmrec_examples - len(picked)
            if len(rnd) > room:
                rnd = sorted(rnd, key=lambda u: key[u])[:room]
            picked += [(u, w) for u in sorted(rnd)]
        out = []
        hits = 0
        for u, w in picked:
            train = data.train_seq(u)
            t = len(train) - 1 - w
            rng = np.random.default_rng([self.seed, 0x7EA1, u, w])
            cands, gold = draw_list(data, train, int(train[t]), m.llmrec_train_candidates,
                                    rng, banned)
            negs = np.delete(cands, gold)
            hits += bool(len(protected)) and bool(np.isin(negs, protected).any())
            out.append((u, train[:t], cands, gold))
        self.stats["llmrec_triggered_negatives"] = hits / max(len(out), 1)
        return out

    def fit(self, data: SequenceData, weights: np.ndarray, protected: np.ndarray,
            on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
        ex = self.examples(data, weights, protected)
        if not ex:
            raise ConfigError("model.llmrec_windows: no user has a training part long enough "
                              "for one example (two items)")
        t0 = time.perf_counter()
        inputs = self.inputs(data.titles, [(h, c) for _, h, c, _ in ex], what="training")
        self.stats["time_llmrec_lower_s"] = time.perf_counter() - t0
        gold = np.array([g for *_, g in ex])
        w = np.array([weights[u] for u, *_ in ex], dtype=np.float32)
        parts = [data.train_seq(u) for u in range(data.n_users)]
        self.counts = np.bincount(np.concatenate(parts), weights=np.repeat(weights, [
            len(p) for p in parts]), minlength=data.n_items + 1)
        rng = np.random.default_rng([self.seed, 0x7EA2])
        history = []
        for epoch in range(self.cfg.model.llmrec_epochs):
            start = time.perf_counter()

            def show(seen: int, n: int, loss: float, epoch: int = epoch) -> None:
                if seen == n or seen % (50 * self.reader.batch_size) == 0:
                    print(f"llmrec epoch {epoch} {seen}/{n} loss {loss:.4f}", flush=True)

            [loss] = self.reader.train(inputs, gold, _listwise, w, rng=rng, epochs=1,
                                       on_batch=show if self.progress else None)
            row = {"epoch": epoch, "loss": loss, "time_s": time.perf_counter() - start,
                   "train_examples": len(ex)}
            history.append(row)
            if on_epoch:
                on_epoch(row)
        n_fake_ex = sum(1 for u, *_ in ex if u >= self.n_real)
        self.stats.update(llmrec_train_examples=float(len(ex)),
                          llmrec_fake_examples=float(n_fake_ex),
                          time_llmrec_train_s=self.reader.train_time_s)
        return history


class LLMRecVictim:
    """The ``Victim`` protocol over ``LLMRec`` on the candidate-list protocol.

    The LoRA training needs the weights in-process (the shared service serves frozen models
    and computes the lower layers), so the base model named by ``cfg.llm.model`` loads here.
    """

    def __init__(self, ctx: VictimContext):
        self.ctx, self.cfg = ctx, ctx.cfg
        self.rec: LLMRec | None = None
        self._clean: tuple[tuple, np.ndarray] | None = None

    def fit(self, data: SequenceData, weights: np.ndarray,
            hook: TrainHook | None = None) -> FitResult:
        if hook is not None:
            raise ConfigError("defense.name: llmrec takes no training hook (its registry entry "
                              "declares no item table)")
        self.rec = LLMRec(self.cfg, n_real=self.ctx.n_real, llm=self.ctx.llm,
                          device=self.ctx.device, progress=self.ctx.progress)
        history = self.rec.fit(data, weights, self.ctx.triggered, on_epoch=self.ctx.on_epoch)
        return FitResult(history, dict(self.rec.stats))

    def _cases(self, data: SequenceData, exclude: np.ndarray | None) -> list[Case]:
        cs = for_job(self.cfg, data, self.ctx.n_real, exclude)
        if not cs:
            raise ConfigError(f"eval.list_candidates: no user has {self.cfg.eval.list_candidates}"
                              " free items for a candidate list (catalogue too small)")
        return cs

    def evaluate(self, data: SequenceData, targets: np.ndarray,
                 exclude: np.ndarray | None = None,
                 per_target: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        """HR@1/HR@3 among candidates, popularity on the same lists, and ``valid_ratio``: the
        share of lists whose top score is unique (the model names one candidate)."""
        assert self.rec is not None, "fit first"  # candidate lists: no per-target ranking
        cs = self._cases(data, exclude)
        scores = self.rec.scores(data.titles, cs)
        self._clean = (_key(data, exclude), scores)
        top = scores.max(1, keepdims=True)
        out = list_metrics(scores, cs, self.rec.counts)
        out["valid_ratio"] = float(np.mean((scores == top).sum(1) == 1))
        return out

    def backdoor_asr(self, data: SequenceData, trigger: str,
                     exclude: np.ndarray | None = None) -> dict[str, float]:
        assert self.rec is not None, "fit first"
        cs = self._cases(data, exclude)
        if self._clean is not None and self._clean[0] == _key(data, exclude):
            clean = self._clean[1]
        else:
            clean = self.rec.scores(data.titles, cs)
        return list_asr(self.rec.scores(data.titles, cs, trigger), clean, cs)


def _key(data: SequenceData, exclude: np.ndarray | None) -> tuple:
    return (id(data), None if exclude is None else tuple(np.asarray(exclude).tolist()))
