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
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .attacks import ATTACKS, choose_targets, simulate_attack
from .attacks.base import AttackContext, PoisonedData
from .config import JobConfig
from .data import load_dataset
from .defenses import DEFENSES
from .defenses.base import DefenseContext, Sanitation
from .llm.client import LLMClient
from .metrics import detection_metrics
from .models import BACKBONES, build_victim
from .models.victim import VictimContext


def needs_llm(cfg: JobConfig) -> bool:
    """Whether any part of the job declares (in its registry entry) that it needs the LLM."""
    return (cfg.model.items == "text" or BACKBONES.entry(cfg.model.backbone).needs_llm
            or ATTACKS.entry(cfg.attack.name).needs_llm
            or DEFENSES.entry(cfg.defense.name).needs_llm)


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
    from .models.trainer import deterministic, pick_device

    device = pick_device(cfg.model.device)
    with deterministic(device):
        return _run(cfg, llm, device, progress, artifacts_dir, on_epoch)


def _run(cfg: JobConfig, llm: LLMClient | None, device: str, progress: bool,
         artifacts_dir: str | Path | None, on_epoch: Callable[[dict], None] | None
         ) -> dict[str, float]:
    seed_everything(cfg.seed)
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
            seed=cfg.seed, llm=llm, device=device, llm_cfg=cfg.llm,
            simulate=partial(simulate_attack, model_cfg=cfg.model, device=device)))

    history: list[dict] = []

    def record(row: dict) -> None:
        history.append(row)
        if on_epoch:
            on_epoch(row)

    victim = build_victim(VictimContext(cfg, poisoned.n_real, llm, device, progress, record,
                                        np.flatnonzero(poisoned.poisoned_items)))
    train_data, weights = sanitation.apply(poisoned.data)
    with _timed(metrics, "train"):
        fit = victim.fit(train_data, weights, sanitation.hook)
    metrics.update(fit.metrics)
    if sanitation.hook is not None:
        sanitation = sanitation.with_report(sanitation.hook.report())
        # the defense's in-training work is its cost, not the victim's: stages stay disjoint
        metrics["time_defense_s"] += fit.hook_time_s
        metrics["time_train_s"] -= fit.hook_time_s
    with _timed(metrics, "eval"):
        # real users' own sequences (items a defense removed from training stay in their
        # histories, so masking and target eligibility match the undefended run); titles as
        # the defense left them, since that is what the deployed model would see
        eval_data = poisoned.data.with_titles(train_data.titles)
        # items evaluation never draws (as a pushed item or a list negative): the training-time
        # triggered ones, and the targets, so every arm of a comparison reads the same lists
        exclude = np.union1d(np.flatnonzero(poisoned.poisoned_items), poisoned.targets)
        per_target: dict[str, np.ndarray] = {}
        metrics.update(victim.evaluate(eval_data, poisoned.targets, exclude, per_target))
        if poisoned.trigger is not None:
            metrics.update(victim.backdoor_asr(eval_data, poisoned.trigger, exclude))

    metrics.update(_detection(poisoned, sanitation))
    metrics.update(_numeric(poisoned.stats, "attack_"))
    metrics.update(_numeric(sanitation.stats, "defense_"))
    metrics["n_fake_users"] = float(poisoned.n_fake)
    metrics["n_targets"] = float(len(poisoned.targets))
    if llm is not None:
        metrics.update(_llm_usage(llm_before, llm.stats()))
    metrics["time_total_s"] = time.perf_counter() - start
    if artifacts_dir is not None:
        _write_artifacts(Path(artifacts_dir), cfg, poisoned, sanitation, history, per_target)
    return metrics


def _detection(poisoned: PoisonedData, sanitation: Sanitation) -> dict[str, float]:
    out: dict[str, float] = {}
    if sanitation.user_scores is not None and poisoned.n_fake:
        out.update(detection_metrics(sanitation.user_scores, poisoned.is_fake,
                                     sanitation.user_threshold, "user"))
    if poisoned.poisoned_items.any():
        truth = poisoned.poisoned_items[1:]
        if sanitation.item_scores is not None:
            out.update(detection_metrics(sanitation.item_scores[1:], truth,
                                         sanitation.item_threshold, "item"))
        for stage, (scores, threshold) in sanitation.item_stage_scores.items():
            found = detection_metrics(scores[1:], truth, threshold, "item")
            out.update({f"{k}_{stage}": v for k, v in found.items()})
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
                     history: list[dict], per_target: dict[str, np.ndarray]) -> None:
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
    if per_target:  # one row per target: T-HR/T-NDCG and how many users it was scored for
        pq.write_table(pa.table(per_target), out / "targets.parquet")
    if sanitation.item_scores is not None:
        items = {"item": np.arange(poisoned.data.n_items + 1),
                 "poisoned": poisoned.poisoned_items,
                 "score": np.asarray(sanitation.item_scores, dtype=np.float32)}
        for stage, (scores, _) in sanitation.item_stage_scores.items():
            items[f"score_{stage}"] = np.asarray(scores, dtype=np.float32)
        pq.write_table(pa.table(items), out / "item_scores.parquet")
