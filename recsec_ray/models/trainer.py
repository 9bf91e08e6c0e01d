"""One trainer for every backbone: plain PyTorch, per-user loss weights, early stopping.

Each epoch is one pass over all users with a positive weight (real and fake alike), one
sample per user: the last ``max_len + 1`` items of its training part (``seq[:-2]``), supervised
at every position. Batches are random draws of users grouped by length and cut to their
longest row (``_batches``), so little of the arithmetic goes to padding. The batch loss is
``model.batch_loss``: by default the reference's mean over every supervised position, each
weighted by its user's weight (``model.loss_average``). Users with weight 0 are left out of the
epoch entirely, so weight 0 is exactly "not in the data". A batch (what ``batch_loss`` and a
``TrainHook.batch_loss`` see) is a dict of ``users`` (B,), ``input`` and ``target`` (B, W:
W <= max_len, the batch's longest row; ``target[:, t]`` follows ``input[:, t]``, 0 = padding)
and ``weights`` (B,). Epochs are numbered from 0.

After each epoch the model is scored on the validation item of real users (full ranking, the
last slot's state only); the weights with the best NDCG@10 are kept (a copy of the tensors)
and restored, and training stops after ``cfg.patience`` epochs without improvement.
Randomness (init aside, see ``build_model``) comes from ``seed`` alone and the caller's RNG
state is left untouched. Same seed, same metrics holds bit for bit on CPU with the same number
of torch threads: a sweep trial runs with ``--cpus-per-trial`` threads and ``recsec run`` with
every core, and sums split over a different number of threads round differently, which a
reweighting defense (LoRec) can grow into a different best epoch. Item lookups go through
``F.embedding``, whose CPU backward sums duplicate indices in a fixed order: the backward of
plain indexing (``table[seqs]``) summed them (every padding slot is index 0) in thread-race
order, so two runs of the same config differed in the last bits and DP's greedy choices
turned that into other fake users. As a safety net training runs with torch's deterministic
algorithms on CPU (``deterministic``). On CUDA, atomics in ``index_add`` and cuDNN's GRU are
not bit-deterministic, so GPU runs agree only to float noise (close, not equal).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import EvalConfig, ModelConfig
from ..data.sequences import SequenceData, pad_left
from ..errors import ConfigError, ModelOutputError
from ..metrics import ranking_metrics
from .hooks import TrainHook

VALID_EVAL = EvalConfig(ks=(10,), target_ks=())


@dataclass
class TrainResult:
    model: torch.nn.Module
    history: list[dict] = field(default_factory=list)  # one entry per epoch
    best_epoch: int = 0
    hook_time_s: float = 0.0  # spent in the defense's hook: its in-training cost


@contextmanager
def deterministic(device: str) -> Iterator[None]:
    """Torch's deterministic algorithms on CPU for the block, then the caller's setting back.
    (On CUDA they would slow training and still not cover ``index_add``: left as they are.)"""
    before = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(before or not device.startswith("cuda"), warn_only=True)
    # the mode also NaN-fills every fresh tensor, a debugging aid for reads of uninitialised
    # memory (thousands of fills an epoch, ~3 % of it); no result depends on it
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def pick_device(name: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; asking for a missing GPU fails."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device: {name!r} requested but no CUDA device is available")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"model.device: {name!r} is not one of auto, cpu, cuda, cuda:N")
    return name


def _check_weights(weights: np.ndarray | None, n_users: int) -> np.ndarray:
    if weights is None:
        return np.ones(n_users, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float32)
    if w.shape != (n_users,):
        raise ConfigError(f"user_weights: expected {n_users} weights, got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ConfigError("user_weights: must be finite and >= 0")
    return w


def _validate(model, data: SequenceData, n_real: int) -> dict[str, float]:
    m = ranking_metrics(model, data, n_real, np.zeros(0, dtype=np.int64), VALID_EVAL, "valid")
    return {"valid_hr@10": m["hr@10"], "valid_ndcg@10": m["ndcg@10"]}


def train(model, data: SequenceData, cfg: ModelConfig, *, n_real: int,
          user_weights: np.ndarray | None = None, seed: int, hook: TrainHook | None = None,
          progress: bool = True, device: str = "cpu",
          on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    device = pick_device(device)
    weights = _check_weights(user_weights, data.n_users)
    if not 1 <= n_real <= data.n_users:
        raise ConfigError(f"n_real: {n_real} not in 1..{data.n_users}")
    model.to(device)
    if not model.trainable:  # pop: count, validate once
        start = time.perf_counter()
        model.fit(data, weights)
        entry = {"epoch": 0, "loss": 0.0, **_validate(model, data, n_real),
                 "time_s": time.perf_counter() - start}
        if on_epoch:
            on_epoch(entry)
        return TrainResult(model, [entry], 0)

    parts = [data.train_seq(u) for u in range(data.n_users)]
    rows = torch.from_numpy(pad_left(parts, model.max_len + 1)).to(device)
    lengths = np.minimum([len(p) for p in parts], model.max_len + 1)
    # fused: one kernel over all parameters instead of a dozen ops per tensor (same maths)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=True)
    rng = np.random.default_rng([seed, 0x7A1])
    history: list[dict] = []
    best_ndcg, best_epoch, best_state = -1.0, 0, _snapshot(model)
    # Model selection starts at ``cfg.select_after`` or, later, where a hook starts acting
    # (LoRec's reweighting), and training never stops before it: the model kept is one
    # trained under the defense.
    hook_start = hook.selection_start_epoch if hook is not None else None
    restart = max(cfg.select_after, hook_start or 0) or None
    timer = _HookTimer()
    fork_devices = [torch.device(device)] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=fork_devices, device_type="cuda"), deterministic(device):
        torch.manual_seed(seed)
        bar = tqdm(range(cfg.epochs), desc=f"train {type(model).__name__}", unit="epoch",
                   disable=not progress, dynamic_ncols=True)
        for epoch in bar:
            start = time.perf_counter()
            if epoch == restart:
                best_ndcg, best_epoch = -1.0, epoch
            epoch_weights = weights
            if hook is not None:  # the hook starts from the given weights every epoch
                with timer:
                    given = hook.on_epoch_start(epoch, model, weights.copy())
                # a user the sanitation removed stays removed
                epoch_weights = _check_weights(given, data.n_users) * (weights > 0)
            loss_sum = _train_epoch(model, rows, lengths, epoch_weights, opt, cfg.batch_size,
                                    rng, hook, epoch, timer)
            entry = {"epoch": epoch, "loss": loss_sum, **_validate(model, data, n_real),
                     "time_s": time.perf_counter() - start}
            history.append(entry)
            if on_epoch:
                on_epoch(entry)
            if entry["valid_ndcg@10"] > best_ndcg:
                best_ndcg, best_epoch = entry["valid_ndcg@10"], epoch
                best_state = _snapshot(model)
            bar.set_postfix(loss=f"{loss_sum:.4f}", ndcg=f"{entry['valid_ndcg@10']:.4f}",
                            best=best_epoch)
            # patience 0 stops at the first epoch without a gain
            waiting = restart is not None and epoch < restart
            if not waiting and epoch - best_epoch >= max(cfg.patience, 1):
                break
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, history, best_epoch, timer.total)


class _HookTimer:
    """Wall time inside the hook, so ``time_defense_s`` covers a defense's in-training work."""

    def __init__(self) -> None:
        self.total, self._start = 0.0, 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.total += time.perf_counter() - self._start


def _snapshot(model) -> dict[str, torch.Tensor]:
    """The weights as they are now (a copy, not the live tensors)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


BUCKET = 8  # batches whose users are grouped by length (1: no grouping)


def _batches(order: np.ndarray, lengths: np.ndarray, batch_size: int,
             rng: np.random.Generator) -> list[np.ndarray]:
    """The shuffled users ``order`` cut into batches of similar lengths: each run of
    ``BUCKET`` batches is sorted by length before it is cut, and the batches are then shuffled,
    so a batch is still a random draw of users but pads little (how many batches, and which
    users an epoch visits, do not change)."""
    span = batch_size * BUCKET
    out = []
    for start in range(0, len(order), span):
        part = order[start:start + span]
        part = part[np.argsort(lengths[part], kind="stable")]
        out += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [out[i] for i in rng.permutation(len(out))] if BUCKET > 1 else out


def _train_epoch(model, rows: torch.Tensor, lengths: np.ndarray, weights: np.ndarray, opt,
                 batch_size: int, rng: np.random.Generator, hook: TrainHook | None, epoch: int,
                 timer: _HookTimer) -> float:
    """One pass over users with weight > 0; returns the mean batch loss. Each batch is cut to
    its longest row: slots that are padding in every row change nothing (positions count
    from the right) and cost a full share of the arithmetic."""
    model.train()
    active = np.flatnonzero(weights > 0)
    order = active[rng.permutation(len(active))]
    w_all = torch.from_numpy(weights).to(rows.device)
    total, n_batches = 0.0, 0
    for chosen in _batches(order, lengths, batch_size, rng):
        idx = torch.from_numpy(chosen).to(rows.device)
        seq = rows[idx, -max(2, int(lengths[chosen].max())):]
        batch = {"users": idx, "input": seq[:, :-1], "target": seq[:, 1:],
                 "weights": w_all[idx]}
        vectors = model.item_vectors()
        loss = model.batch_loss(batch, vectors)
        if hook is not None:
            with timer:
                loss = hook.batch_loss(model, batch, loss, vectors)
        if not torch.isfinite(loss):
            raise ModelOutputError(f"{type(model).__name__}: training loss became {loss.item()}"
                                   f" at epoch {epoch}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
        n_batches += 1
    return total / max(n_batches, 1)
