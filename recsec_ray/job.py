"""One poison → defend → train → evaluate job as a pure function of a typed config (DESIGN §1).

Knows nothing of Ray Tune or MLflow: the sweep wraps it, and a user can call it directly.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .attacks import ATTACKS, choose_targets
from .attacks.base import AttackContext, PoisonedData
from .config import JobConfig
from .data import load_dataset
from .data.sequences import SequenceData
from .defenses import DEFENSES
from .defenses.base import DefenseContext, Sanitation
from .llm.client import LLMClient
from .metrics import detection_metrics, ranking_metrics

_LLM_DEFENSES = {"llm4dec", "lorec", "pscanner", "onion"}


def needs_llm(cfg: JobConfig) -> bool:
    return (cfg.model.items == "text" or cfg.model.backbone == "llmrec"
            or cfg.attack.name == "llm" or cfg.defense.name in _LLM_DEFENSES)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def _timed(metrics: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    metrics[f"time_{stage}_s"] = time.perf_counter() - start


def run(cfg: JobConfig, llm: LLMClient | None = None, *, progress: bool = True,
        artifacts_dir: str | Path | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> dict[str, float]:
    """Run one job; returns the canonical metrics (DESIGN §6) plus stage timings."""
    from .models.trainer import pick_device

    seed_everything(cfg.seed)
    device = pick_device(cfg.model.device)
    metrics: dict[str, float] = {}
    start = time.perf_counter()
    if llm is None and needs_llm(cfg):
        from .llm import get_client

        llm = get_client(cfg.llm)
    llm_before = llm.stats() if llm is not None else {}

    with _timed(metrics, "load"):
        data = load_dataset(cfg.data, progress=progress)
        targets = choose_targets(data, cfg.attack, cfg.seed)
    with _timed(metrics, "attack"):
        poisoned = ATTACKS[cfg.attack.name](AttackContext(
            data=data, targets=targets, cfg=cfg.attack, model_cfg=cfg.model, seed=cfg.seed,
            llm=llm, device=device))
    with _timed(metrics, "defense"):
        # user ids would name the injected users ("fake-3"): the defense sees none
        sanitation = DEFENSES[cfg.defense.name](DefenseContext(
            data=replace(poisoned.data, user_ids=[]), cfg=cfg.defense, model_cfg=cfg.model,
            seed=cfg.seed, llm=llm, device=device, llm_cfg=cfg.llm))

    if cfg.model.backbone == "llmrec":
        from .models import llmrec

        history: list[dict] = []

        def record(row: dict) -> None:
            history.append(row)
            if on_epoch:
                on_epoch(row)

        metrics.update(llmrec.train_and_evaluate(cfg, poisoned, sanitation, llm, device=device,
                                                 progress=progress, on_epoch=record))
    else:
        history = _train_and_evaluate(cfg, poisoned, sanitation, llm, device, progress,
                                      on_epoch, metrics)

    metrics.update(_detection(poisoned, sanitation))
    metrics.update(_numeric(poisoned.stats, "attack_"))
    metrics.update(_numeric(sanitation.stats, "defense_"))
    metrics["n_fake_users"] = float(poisoned.n_fake)
    metrics["n_targets"] = float(len(poisoned.targets))
    if llm is not None:
        metrics.update(_llm_usage(llm_before, llm.stats()))
    metrics["time_total_s"] = time.perf_counter() - start
    if artifacts_dir is not None:
        _write_artifacts(Path(artifacts_dir), cfg, poisoned, sanitation, history)
    return metrics


def _train_and_evaluate(cfg: JobConfig, poisoned: PoisonedData, sanitation: Sanitation,
                        llm: LLMClient | None, device: str, progress: bool,
                        on_epoch: Callable[[dict], None] | None,
                        metrics: dict[str, float]) -> list[dict]:
    from .models import build_model
    from .models.trainer import train

    train_data = apply_sanitation(poisoned.data, sanitation)
    features = None
    if cfg.model.items == "text":
        assert llm is not None
        with _timed(metrics, "embed_titles"):
            features = embed_titles(llm, train_data.titles, cfg.model.text_encoder)
    weights = sanitation.user_weights * ~sanitation.removed_users
    with _timed(metrics, "train"):
        model = build_model(cfg.model, train_data.n_items, cfg.data.max_len, features,
                            seed=cfg.seed)
        result = train(model, train_data, cfg.model, n_real=poisoned.n_real,
                       user_weights=weights.astype(np.float32), seed=cfg.seed,
                       hook=_KeepRemoved(sanitation) if sanitation.hook else None,
                       progress=progress, device=device, on_epoch=on_epoch)
    with _timed(metrics, "eval"):
        # Evaluate on the sequences real users actually have (items a defense removed from
        # training stay in their histories, so masking and target eligibility match the
        # undefended run); titles stay as the defense left them, since that is what the
        # deployed model would see.
        eval_data = poisoned.data.with_titles(train_data.titles)
        metrics.update(ranking_metrics(result.model, eval_data, poisoned.n_real,
                                       poisoned.targets, cfg.eval))
        if poisoned.trigger is not None:
            metrics.update(_backdoor_asr(cfg, result.model, eval_data, poisoned, llm))
    metrics["best_epoch"] = float(result.best_epoch)
    metrics["epochs_trained"] = float(len(result.history))
    return result.history


class _KeepRemoved:
    """Wraps a defense's train hook so users it removed stay at weight 0."""

    def __init__(self, sanitation: Sanitation):
        self._hook = sanitation.hook
        self._keep = (~sanitation.removed_users).astype(np.float32)
        self.selection_start_epoch = getattr(self._hook, "selection_start_epoch", None)

    def on_epoch_start(self, epoch: int, model: Any, weights: np.ndarray) -> np.ndarray:
        return self._hook.on_epoch_start(epoch, model, weights) * self._keep

    def extra_loss(self, model: Any, batch: dict, loss: torch.Tensor) -> torch.Tensor:
        return self._hook.extra_loss(model, batch, loss)


def apply_sanitation(data: SequenceData, sanitation: Sanitation) -> SequenceData:
    """Cleaned titles, and interactions with removed items dropped from the training parts
    (valid and test items are kept so the leave-one-out split stays the same)."""
    if sanitation.titles is not None:
        data = data.with_titles(sanitation.titles)
    if sanitation.removed_items is not None and sanitation.removed_items.any():
        gone = sanitation.removed_items
        seqs = [np.concatenate([s[:-2][~gone[s[:-2]]], s[-2:]]) for s in data.seqs]
        data = replace(data, seqs=seqs)
    return data


def embed_titles(llm: LLMClient, titles: list[str], model: str) -> np.ndarray:
    """Title-embedding matrix for text items; row 0 (padding, no title) stays zero."""
    rows = np.asarray(llm.embed(titles[1:], model=model), dtype=np.float32)
    return np.vstack([np.zeros((1, rows.shape[1]), dtype=np.float32), rows])


def _backdoor_asr(cfg: JobConfig, model: Any, data: SequenceData, poisoned: PoisonedData,
                  llm: LLMClient | None) -> dict[str, float]:
    from .attacks.badrec import pushed_items, triggered_titles
    from .metrics import asr

    assert llm is not None and poisoned.trigger is not None
    pushed = pushed_items(data, poisoned.n_real, seed=cfg.seed,
                          exclude=np.flatnonzero(poisoned.poisoned_items))
    triggered = embed_titles(llm, triggered_titles(data.titles, poisoned.trigger),
                             cfg.model.text_encoder)
    return asr(model, data, poisoned.n_real, pushed, triggered, ks=(10, 50),
               batch_size=cfg.eval.batch_size)


def _detection(poisoned: PoisonedData, sanitation: Sanitation) -> dict[str, float]:
    out: dict[str, float] = {}
    if sanitation.user_scores is not None and poisoned.n_fake:
        out.update(detection_metrics(sanitation.user_scores, poisoned.is_fake,
                                     sanitation.user_threshold, "user"))
    if sanitation.item_scores is not None and poisoned.poisoned_items.any():
        out.update(detection_metrics(sanitation.item_scores[1:], poisoned.poisoned_items[1:],
                                     sanitation.item_threshold, "item"))
    return out


def _numeric(stats: dict[str, Any], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in stats.items()
            if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)}


def _llm_usage(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """This job's share of the client's counters (a shared client may have served others)."""
    def delta(key: str) -> float:
        return float(after.get(key, 0) - before.get(key, 0))

    items = delta("items")
    return {"llm_calls": delta("calls"),
            "llm_cache_hit_rate": delta("cache_hits") / items if items else 0.0}


def _write_artifacts(out: Path, cfg: JobConfig, poisoned: PoisonedData, sanitation: Sanitation,
                     history: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (out / "curves.json").write_text(json.dumps(history))
    n_users = poisoned.data.n_users
    users = {"user": np.arange(n_users), "is_fake": poisoned.is_fake,
             "weight": sanitation.user_weights.astype(np.float32),
             "removed": sanitation.removed_users}
    if sanitation.user_scores is not None:
        users["score"] = np.asarray(sanitation.user_scores, dtype=np.float32)
    pq.write_table(pa.table(users), out / "user_scores.parquet")
    if sanitation.item_scores is not None:
        items = {"item": np.arange(poisoned.data.n_items + 1),
                 "poisoned": poisoned.poisoned_items,
                 "score": np.asarray(sanitation.item_scores, dtype=np.float32)}
        pq.write_table(pa.table(items), out / "item_scores.parquet")
