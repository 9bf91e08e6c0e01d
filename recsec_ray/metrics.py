"""Every metric of DESIGN §6, vectorised in torch (ranking) or numpy (detection).

Ranking is over the full catalogue. A user's history is masked: for ``part="test"`` everything
before the test item (``seq[:-1]``), for ``part="valid"`` everything before the validation item
(``seq[:-2]``); the held-out item itself is never masked, so a repeat purchase stays rankable.

Rank of item t = 1 + #items scoring strictly higher + #items scoring exactly the same with a
smaller index. That is t's position in a stable descending sort, i.e. what a top-K list built
by sorting shows; it matters for models with tied scores (``pop``: equal counts) and never
depends on luck. Non-finite scores raise ``ModelOutputError``: a NaN compares as "not greater"
and would otherwise silently become a top rank.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .config import EvalConfig
from .data.sequences import SequenceData, pad_left
from .errors import ConfigError, ModelOutputError

_CUT = {"valid": 2, "test": 1}  # held-out item = seq[-cut], history = seq[:-cut]
# a batch's score matrix stays under this: glibc serves larger blocks by mmap, and every
# fresh 40 MB matrix (512 users x 20,000 items) then costs ~10,000 page faults
SCORE_BYTES = 16 << 20


def _device(model: torch.nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def score_users(model, data: SequenceData, users: np.ndarray, part: str = "test",
                batch_size: int = 512) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield ``(users, scores)`` batches; scores (B, n_items + 1), history and padding -inf.

    Users go by history length (stable), so each batch's input is only as wide as its longest
    history (capped at ``max_len``): on a catalogue of short sequences most of a window padded
    to 50 would be padding. Batches hence come in that order, not the given one, and hold at
    most ``SCORE_BYTES`` of scores (fewer than ``batch_size`` users on a large catalogue).
    """
    if part not in _CUT:
        raise ConfigError(f"part: {part!r} is not one of valid, test")
    cut, device = _CUT[part], _device(model)
    users = np.asarray(users, dtype=np.int64)
    lengths = np.fromiter((len(data.seqs[u]) for u in users), dtype=np.int64, count=len(users))
    users = users[np.argsort(lengths, kind="stable")]
    batch_size = max(1, min(batch_size, SCORE_BYTES // (4 * (data.n_items + 1))))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(users), batch_size):
                ub = users[start:start + batch_size]
                hist = [data.seqs[u][:-cut] for u in ub]
                longest = max(1, max(map(len, hist)))
                inp = torch.from_numpy(pad_left(hist, min(longest, model.max_len))).to(device)
                scores = model.scores(inp).float()
                _check_finite(model, scores, ub)
                held = torch.tensor([int(data.seqs[u][-cut]) for u in ub], device=device)
                keep = scores.gather(1, held[:, None])
                full = torch.from_numpy(pad_left(hist, longest)).to(device)
                scores.scatter_(1, full, float("-inf"))  # padding index 0 lands in column 0
                scores.scatter_(1, held[:, None], keep)
                scores[:, 0] = float("-inf")
                yield ub, scores
    finally:
        model.train(was_training)


def _check_finite(model, scores: torch.Tensor, users: np.ndarray) -> None:
    # a finite sum means every term is finite (inf and nan propagate): one pass, no mask;
    # only a non-finite sum (or an overflow) takes the exact element-wise look
    if torch.isfinite(scores[:, 1:].sum()):
        return
    bad = ~torch.isfinite(scores[:, 1:])
    if bad.any():
        rows = bad.any(1).nonzero(as_tuple=True)[0].cpu().numpy()
        raise ModelOutputError(f"{type(model).__name__} produced {int(bad.sum())} non-finite "
                               f"scores for {len(rows)} users (first: user {users[rows[0]]})")


def ranks(scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """1-based rank of ``items[b]`` in row b of ``scores`` (ties: smaller index first)."""
    s = scores.gather(1, items[:, None])
    index = torch.arange(scores.shape[1], device=scores.device)
    ahead = (scores > s) | ((scores == s) & (index[None, :] < items[:, None]))
    return 1 + _count(ahead)


def _count(mask: torch.Tensor) -> torch.Tensor:
    """True entries per row, as int64. Summed in int32: a plain bool ``sum`` first copies the
    mask to int64, three times the time of the count itself."""
    return mask.sum(1, dtype=torch.int32).long()


def ranks_upto(scores: torch.Tensor, items: torch.Tensor, k: int) -> torch.Tensor:
    """Ranks (as :func:`ranks`) of ``items[b, j]`` in row b, exact up to ``k``; any rank
    beyond ``k`` comes back as ``k + 1`` (HR@K and NDCG@K for K <= k need no more).

    One top-k per row instead of a pass over the catalogue per item: an item scoring above
    the k-th value has every item that outranks it inside the top k; one scoring below it has
    at least k ahead. Only an item tied with the k-th value (ties may straddle the cut) is
    ranked against the whole row.
    """
    if k >= scores.shape[1]:
        return torch.stack([ranks(scores, items[:, j]) for j in range(items.shape[1])], 1)
    s = scores.gather(1, items)  # (B, T)
    if items.shape[1] == 1:  # one item (validation): one counting pass beats a top-k
        above = _count(scores > s)[:, None]  # rank >= 1 + above, so above >= k: beyond k
        out = torch.where(above >= k, k + 1, 1 + above)
        rows = (above[:, 0] < k).nonzero(as_tuple=True)[0]  # maybe within k: ties decide
        if len(rows):
            out[rows, 0] = ranks(scores[rows], items[rows, 0]).clamp(max=k + 1)
        return out
    top = scores.topk(k, dim=1)
    kth = top.values[:, -1:]
    vals, idx = top.values[:, None, :], top.indices[:, None, :]
    ahead = (vals > s[..., None]) | ((vals == s[..., None]) & (idx < items[..., None]))
    out = torch.where(s > kth, 1 + ahead.sum(-1), k + 1)
    rows, cols = (s == kth).nonzero(as_tuple=True)
    if len(rows):
        out[rows, cols] = ranks(scores[rows], items[rows, cols]).clamp(max=k + 1)
    return out


def _hr_ndcg(rank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    hit = rank <= k
    return hit.double(), torch.where(hit, 1.0 / torch.log2(rank.double() + 1), 0.0)


def ranking_metrics(model, data: SequenceData, n_real: int, targets: np.ndarray,
                    cfg: EvalConfig, part: str = "test",
                    per_target: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """HR@K / NDCG@K over real users 0..n_real-1, and T-HR@K / T-NDCG@K per target item.

    A target counts for a user only if the user's full sequence lacks it; per target the
    metric is averaged over those users, then averaged over targets (targets no user lacks
    are skipped; nan if none remain). ``per_target``, when given, is filled with one column
    per metric (``item``, ``eligible_users``, ``t_hr@K``, ``t_ndcg@K``; nan where no user is
    eligible): the spread across targets a mean alone hides.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if n_real < 1 or n_real > data.n_users:
        raise ConfigError(f"n_real: {n_real} not in 1..{data.n_users}")
    if targets.size and (targets.min() < 1 or targets.max() > data.n_items):
        raise ConfigError(f"targets: item indices must be in 1..{data.n_items}")
    sums = {k: [0.0, 0.0] for k in cfg.ks}
    t_sums = {k: np.zeros((2, len(targets))) for k in cfg.target_ks}
    t_count = np.zeros(len(targets))
    use_targets = bool(len(targets) and cfg.target_ks)
    cap = max(cfg.ks + (cfg.target_ks if use_targets else ()))
    tgt = None
    for ub, scores in score_users(model, data, np.arange(n_real), part, cfg.batch_size):
        held = torch.tensor([int(data.seqs[u][-_CUT[part]]) for u in ub], device=scores.device)
        if use_targets and tgt is None:
            tgt = torch.from_numpy(targets).to(scores.device)
        items = held[:, None] if not use_targets else \
            torch.cat([held[:, None], tgt.expand(len(ub), -1)], 1)
        r = ranks_upto(scores, items, cap)
        for k in cfg.ks:
            hr, ndcg = _hr_ndcg(r[:, 0], k)
            sums[k][0] += float(hr.sum())
            sums[k][1] += float(ndcg.sum())
        if not use_targets:
            continue
        seen = torch.zeros_like(scores, dtype=torch.bool)
        full = torch.from_numpy(pad_left([data.seqs[u] for u in ub],
                                         max(len(data.seqs[u]) for u in ub)))
        seen.scatter_(1, full.to(scores.device), True)
        eligible = ~seen[:, tgt]  # (B, n_targets)
        t_count += eligible.sum(0).cpu().numpy()
        for k in cfg.target_ks:
            hr, ndcg = _hr_ndcg(r[:, 1:], k)
            t_sums[k][0] += (hr * eligible).sum(0).cpu().numpy()
            t_sums[k][1] += (ndcg * eligible).sum(0).cpu().numpy()
    out: dict[str, float] = {}
    for k in cfg.ks:
        out[f"hr@{k}"] = sums[k][0] / n_real
        out[f"ndcg@{k}"] = sums[k][1] / n_real
    has = t_count > 0
    if per_target is not None:
        per_target.update(item=targets, eligible_users=t_count.astype(np.int64))
    for k in cfg.target_ks:
        for name, row in (("t_hr", 0), ("t_ndcg", 1)):
            each = np.full(len(targets), np.nan)
            each[has] = t_sums[k][row][has] / t_count[has]
            out[f"{name}@{k}"] = float(each[has].mean()) if has.any() else float("nan")
            if per_target is not None:
                per_target[f"{name}@{k}"] = each
    return out


def pushed_items(data: SequenceData, users: int | np.ndarray, seed: int,
                 exclude: np.ndarray | None = None) -> np.ndarray:
    """Test-time protocol: per user, one item to push with the trigger, drawn (seeded) outside
    the user's whole sequence and outside ``exclude`` (pass every training-time triggered
    item, ``np.flatnonzero(poisoned.poisoned_items)``). ``users``: the user indices, or a
    count n meaning users 0..n-1."""
    if isinstance(users, (int, np.integer)):
        users = np.arange(int(users))
    rng = np.random.default_rng([seed, 0x9B5])
    banned = np.zeros(data.n_items + 1, dtype=bool)
    banned[0] = True
    if exclude is not None:
        banned[np.asarray(exclude, dtype=np.int64)] = True
    out = np.empty(len(users), dtype=np.int64)
    for j, u in enumerate(np.asarray(users)):
        mask = banned.copy()
        mask[data.seqs[int(u)]] = True
        free = np.flatnonzero(~mask)
        if not len(free):
            raise ConfigError(f"attack.targets: user {u} has seen every item not excluded; "
                              "no item is left to push")
        out[j] = free[rng.integers(len(free))]
    return out


def asr(model, data: SequenceData, n_real: int, pushed_items: np.ndarray,
        triggered_features: np.ndarray, ks: tuple[int, ...] = (10, 50),
        batch_size: int = 512) -> dict[str, float]:
    """BadRec attack success: share of real test users whose pushed item reaches the top-K.

    ``pushed_items[u]`` (drawn by the caller outside u's history) is scored with its title
    carrying the trigger (``triggered_features``: the title-embedding matrix with triggered
    titles); every other item keeps its clean score, and the user's clean history is the
    input. History is masked as for the test split. ``asr_base@K``: the same pushed items
    without the trigger, the baseline the trigger's effect is read against.
    """
    pushed = np.asarray(pushed_items, dtype=np.int64)
    if pushed.shape != (n_real,):
        raise ConfigError(f"pushed_items: expected {n_real} items (one per real user), got "
                          f"shape {pushed.shape}")
    if pushed.min() < 1 or pushed.max() > data.n_items:
        raise ConfigError(f"pushed_items: item indices must be in 1..{data.n_items}")
    clean = model.item_features()
    if clean is None:
        raise ConfigError("model.items: ASR needs 'text' items (titles carry the trigger)")
    model.set_item_features(triggered_features)
    try:
        with torch.no_grad():
            triggered = model.item_vectors().float()
    finally:
        model.set_item_features(clean)
    hits = {k: 0.0 for k in ks}
    base = {k: 0.0 for k in ks}
    device = _device(model)
    for ub, scores in score_users(model, data, np.arange(n_real), "test", batch_size):
        with torch.no_grad():
            inp = torch.from_numpy(pad_left([data.seqs[u][:-1] for u in ub], model.max_len))
            user = model.user_vectors(inp.to(device)).float()
        p = torch.from_numpy(pushed[ub]).to(device)
        r0 = ranks(scores, p)
        # the full product (not a row-wise dot) so a pushed item scores exactly as it would
        # in ``model.scores``: same kernel, same summation order, exact ties stay ties
        s = (user @ triggered.T.contiguous()).gather(1, p[:, None])[:, 0]
        if not torch.isfinite(s).all():
            raise ModelOutputError(f"{type(model).__name__} produced non-finite scores for "
                                   "triggered items")
        scores.scatter_(1, p[:, None], s[:, None])
        r = ranks(scores, p)
        for k in ks:
            hits[k] += float((r <= k).sum())
            base[k] += float((r0 <= k).sum())
    return {**{f"asr@{k}": hits[k] / n_real for k in ks},
            **{f"asr_base@{k}": base[k] / n_real for k in ks}}


def detection_metrics(scores: np.ndarray, truth: np.ndarray, threshold: float,
                      prefix: str) -> dict[str, float]:
    """Precision, recall, F1 of ``scores >= threshold`` against ``truth``, and ROC-AUC.

    Conventions for empty cases: precision 0 when nothing is flagged (a defense that flags
    nobody finds nothing); recall and F1 nan when truth has no positives; AUC nan when truth
    has a single class. AUC is the Mann-Whitney statistic with tied scores sharing ranks.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(truth, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ConfigError(f"{prefix} detection: scores {s.shape} and truth {y.shape} must be "
                          "1-D of equal length")
    if not np.isfinite(s).all():
        raise ModelOutputError(f"{prefix} detection: {int((~np.isfinite(s)).sum())} "
                               "non-finite scores")
    flagged = s >= threshold
    tp = float((flagged & y).sum())
    n_pos, n_flag = float(y.sum()), float(flagged.sum())
    precision = tp / n_flag if n_flag else 0.0
    recall = tp / n_pos if n_pos else float("nan")
    if np.isnan(recall):
        f1 = float("nan")
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {f"{prefix}_precision": precision, f"{prefix}_recall": recall, f"{prefix}_f1": f1,
            f"{prefix}_auc": roc_auc(s, y)}


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    y = np.asarray(truth, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    mid_rank = upper - (counts - 1) / 2.0  # average 1-based rank of each distinct score
    rank_sum = float(mid_rank[inverse][y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
