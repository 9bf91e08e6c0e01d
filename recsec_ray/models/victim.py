"""The victim protocol: what the job asks of any recommender it poisons and measures.

``fit`` trains on the sanitised data with per-user loss weights (and a defense's training hook),
``evaluate`` measures clean accuracy and target promotion on real users, ``backdoor_asr``
measures a BadRec trigger's success. The sequential backbones (here) and the LLM recommender
(``llmrec.py``) implement it, so ``job.run`` never asks which kind of victim it has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from ..candidates import for_job, list_asr, list_metrics, seq_scores
from ..data.sequences import SequenceData
from ..data.triggers import triggered_titles
from ..errors import ConfigError
from .hooks import TrainHook

if TYPE_CHECKING:
    from ..config import JobConfig
    from ..llm.client import LLMClient


@dataclass(frozen=True)
class VictimContext:
    cfg: JobConfig
    n_real: int  # users 0..n_real-1 are real: validation and evaluation read only them
    llm: LLMClient | None = None
    device: str = "cpu"
    progress: bool = False
    on_epoch: Callable[[dict], None] | None = None
    # the attack's training-time triggered items: a measurement protocol (not a defense's
    # knowledge) that keeps them out of the LLM recommender's sampled negatives
    triggered: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # one row per epoch (MLflow curves)
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. best_epoch, stage times
    hook_time_s: float = 0.0  # time spent inside the defense's hook (its in-training cost)


class Victim(Protocol):
    def fit(self, data: SequenceData, weights: np.ndarray,
            hook: TrainHook | None = None) -> FitResult:
        """Train on ``data`` (real users first, then any injected ones) with per-user loss
        weights; weight 0 means "not in the data"."""
        ...

    def evaluate(self, data: SequenceData, targets: np.ndarray,
                 exclude: np.ndarray | None = None,
                 per_target: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        """Clean accuracy and target promotion on real users' own sequences; ``exclude``:
        items an evaluation must never draw (training-time triggered ones); ``per_target``,
        when given, receives one column per target metric (``metrics.ranking_metrics``)."""
        ...

    def backdoor_asr(self, data: SequenceData, trigger: str,
                     exclude: np.ndarray | None = None) -> dict[str, float]:
        """Share of real users for whom an item given ``trigger`` at test time is recommended,
        beside the same items without it (``asr_base@K``)."""
        ...


def embed_titles(llm: LLMClient, titles: list[str], model: str) -> np.ndarray:
    """Title-embedding matrix for text items; row 0 (padding, no title) stays zero."""
    rows = np.asarray(llm.embed(titles[1:], model=model), dtype=np.float32)
    return np.vstack([np.zeros((1, rows.shape[1]), dtype=np.float32), rows])


class SeqVictim:
    """A sequential backbone (or ``pop``) trained by ``trainer.train`` and ranked over the full
    catalogue (DESIGN §6)."""

    def __init__(self, ctx: VictimContext):
        self.ctx, self.cfg = ctx, ctx.cfg
        self.model: Any = None
        self.counts: np.ndarray | None = None

    def _features(self, titles: list[str], metrics: dict[str, float]) -> np.ndarray | None:
        if self.cfg.model.items != "text":
            return None
        if self.ctx.llm is None:
            raise ConfigError("model.items: 'text' items need the LLM service to embed titles")
        start = time.perf_counter()
        out = embed_titles(self.ctx.llm, titles, self.cfg.model.text_encoder)
        metrics["time_embed_titles_s"] = time.perf_counter() - start
        return out

    def fit(self, data: SequenceData, weights: np.ndarray,
            hook: TrainHook | None = None) -> FitResult:
        from . import build_model
        from .trainer import train

        metrics: dict[str, float] = {}
        features = self._features(data.titles, metrics)
        self.model = build_model(self.cfg.model, data.n_items, self.cfg.data.max_len, features,
                                 seed=self.cfg.seed)
        result = train(self.model, data, self.cfg.model, n_real=self.ctx.n_real,
                       user_weights=weights, seed=self.cfg.seed, hook=hook,
                       progress=self.ctx.progress, device=self.ctx.device,
                       on_epoch=self.ctx.on_epoch)
        self.model = result.model
        parts = [data.train_seq(u) for u in range(data.n_users)]
        self.counts = np.bincount(np.concatenate(parts), weights=np.repeat(weights, [
            len(p) for p in parts]), minlength=data.n_items + 1)  # pop_hr@1 on the lists
        metrics["best_epoch"] = float(result.best_epoch)
        metrics["epochs_trained"] = float(len(result.history))
        return FitResult(result.history, metrics, result.hook_time_s)

    def evaluate(self, data: SequenceData, targets: np.ndarray,
                 exclude: np.ndarray | None = None,
                 per_target: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        from ..metrics import ranking_metrics

        out = ranking_metrics(self.model, data, self.ctx.n_real, targets, self.cfg.eval,
                              per_target=per_target)
        cs = for_job(self.cfg, data, self.ctx.n_real, exclude)
        if not cs:  # a catalogue too small for the lists: full ranking only
            return out
        return {**out, **list_metrics(seq_scores(self.model, data, cs), cs, self.counts)}

    def backdoor_asr(self, data: SequenceData, trigger: str,
                     exclude: np.ndarray | None = None) -> dict[str, float]:
        from ..metrics import asr, pushed_items

        if self.cfg.model.items != "text" or self.ctx.llm is None:
            raise ConfigError("model.items: a backdoor needs 'text' items (titles carry it)")
        pushed = pushed_items(data, self.ctx.n_real, seed=self.cfg.seed, exclude=exclude)
        triggered = embed_titles(self.ctx.llm, triggered_titles(data.titles, trigger),
                                 self.cfg.model.text_encoder)
        out = asr(self.model, data, self.ctx.n_real, pushed, triggered, ks=(10, 50),
                  batch_size=self.cfg.eval.batch_size)
        cs = for_job(self.cfg, data, self.ctx.n_real, exclude)
        if not cs:
            return out
        vectors = _triggered_vectors(self.model, triggered)
        at = torch.tensor([int(c.candidates[c.pushed]) for c in cs], dtype=torch.long)
        return {**out, **list_asr(seq_scores(self.model, data, cs, vectors[at]),
                                  seq_scores(self.model, data, cs), cs)}


def _triggered_vectors(model: Any, features: np.ndarray) -> torch.Tensor:
    """The item table with every title triggered (the model's own features put back)."""
    clean = model.item_features()
    model.set_item_features(features)
    try:
        with torch.no_grad():
            return model.item_vectors().float()
    finally:
        model.set_item_features(clean)
