"""The candidate-list protocol (BadRec's, DESIGN §4 Victims): one set of seeded lists for every
victim, and the metrics read off them.

A case is a real user's history, a list of ``eval.list_candidates`` items (the true next item
among negatives the user never interacted with, shuffled) and one wrong candidate that the
attacker gives the trigger. Clean ``hr@1``/``hr@3``: the true item's rank among the candidates;
``asr@1``: the triggered wrong candidate ranks first; ``asr_base@1``: the same candidate ranks
first without the trigger (the baseline the trigger is read against; chance is 1/C).
``pop_hr@1``: popularity (training counts) ranking the same lists, the floor a recommender
must beat. Ranks follow ``metrics.ranks`` (ties: the earlier candidate first), so a model that
cannot tell its candidates apart earns hits only by list position, as popularity does.

Lists depend on the seed and the user alone (each user's draws come from its own stream and a
fixed permutation of the catalogue), so the undefended and defended runs, and every victim,
read the very same lists; negatives never include ``exclude`` (the training-time triggered
items), so clean accuracy and ASR differ by the trigger only. A user with fewer free items than
a list needs (a tiny catalogue) is left out of the lists rather than given a short one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import LIST_KS
from .data.sequences import SequenceData, pad_left
from .errors import ConfigError, ModelOutputError
from .metrics import ranks

_CUT = {"valid": 2, "test": 1}


@dataclass(frozen=True)
class Case:
    user: int
    history: np.ndarray  # items before the true one, oldest first
    candidates: np.ndarray  # (C,) item indices
    gold: int  # position of the true next item in ``candidates``
    pushed: int  # position of the wrong candidate the attacker triggers


def list_users(n_real: int, n_users: int, seed: int) -> np.ndarray:
    """The evaluated users: a seeded sample of real users (all when there are few)."""
    if n_real <= n_users:
        return np.arange(n_real)
    return np.sort(np.random.default_rng([seed, 0x11575]).choice(n_real, n_users,
                                                                 replace=False))


def draw_list(data: SequenceData, seq: np.ndarray, target: int, n_candidates: int,
              rng: np.random.Generator, banned: np.ndarray | None = None
              ) -> tuple[np.ndarray, int]:
    """(candidates, position of ``target``): ``n_candidates - 1`` negatives outside ``seq``,
    ``target`` and ``banned``, taken in the order of one permutation of the catalogue, so
    banning an item changes only the lists that held it."""
    mask = np.zeros(data.n_items + 1, dtype=bool) if banned is None else banned.copy()
    mask[0] = True
    mask[seq] = True
    mask[target] = True
    order = rng.permutation(data.n_items) + 1
    free = order[~mask[order]]
    if len(free) < n_candidates - 1:
        raise ConfigError(f"eval.list_candidates: {n_candidates} candidates but only "
                          f"{len(free)} items are free for a user")
    cands = rng.permutation(np.concatenate([[target], free[:n_candidates - 1]]))
    return cands.astype(np.int64), int(np.flatnonzero(cands == target)[0])


def cases(data: SequenceData, n_real: int, seed: int, *, n_candidates: int, n_users: int,
          part: str = "test", exclude: np.ndarray | None = None) -> list[Case]:
    """The seeded evaluation lists of ``part`` (test: item ``seq[-1]``, valid: ``seq[-2]``)."""
    cut = _CUT[part]
    banned = np.zeros(data.n_items + 1, dtype=bool)
    if exclude is not None and len(exclude):
        banned[np.asarray(exclude, dtype=np.int64)] = True
    out = []
    for u in list_users(n_real, n_users, seed):
        seq = data.seqs[int(u)]
        taken = banned.copy()
        taken[seq] = True
        if data.n_items - int(taken[1:].sum()) < n_candidates - 1:
            continue
        rng = np.random.default_rng([seed, 0xCA5E, cut, int(u)])
        cands, gold = draw_list(data, seq, int(seq[-cut]), n_candidates, rng, banned)
        pushed = int(rng.choice([j for j in range(n_candidates) if j != gold]))
        out.append(Case(int(u), seq[:-cut], cands, gold, pushed))
    return out


def for_job(cfg, data: SequenceData, n_real: int, exclude: np.ndarray | None) -> list[Case]:
    """The lists a job's victim is scored on (``cfg``: the ``JobConfig``)."""
    e = cfg.eval
    return cases(data, n_real, cfg.seed, n_candidates=e.list_candidates, n_users=e.list_users,
                 exclude=exclude)


def _rank1(scores: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return ranks(torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float64)),
                 torch.from_numpy(pos.astype(np.int64))).numpy()


def list_metrics(scores: np.ndarray, cs: list[Case], counts: np.ndarray | None = None
                 ) -> dict[str, float]:
    """``hr@K`` among the candidates and, given training counts, ``pop_hr@1`` on the lists."""
    if scores.shape != (len(cs), len(cs[0].candidates) if cs else 0):
        raise ModelOutputError(f"list scores: expected ({len(cs)}, C), got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ModelOutputError("list scores: non-finite values (a NaN would rank as a hit)")
    gold = np.array([c.gold for c in cs])
    r = _rank1(scores, gold)
    out = {f"hr@{k}": float(np.mean(r <= k)) for k in LIST_KS}
    if counts is not None:
        pop = np.stack([counts[c.candidates] for c in cs]).astype(np.float64)
        out["pop_hr@1"] = float(np.mean(_rank1(pop, gold) == 1))
    return out


def list_asr(triggered: np.ndarray, clean: np.ndarray, cs: list[Case]) -> dict[str, float]:
    """``asr@1`` (the triggered wrong candidate ranks first) and ``asr_base@1`` (it does
    without the trigger), from the lists' scores with and without the trigger."""
    pushed = np.array([c.pushed for c in cs])
    if not (np.isfinite(triggered).all() and np.isfinite(clean).all()):
        raise ModelOutputError("list scores: non-finite values (a NaN would rank as a hit)")
    return {"asr@1": float(np.mean(_rank1(triggered, pushed) == 1)),
            "asr_base@1": float(np.mean(_rank1(clean, pushed) == 1))}


@torch.no_grad()
def seq_scores(model, data: SequenceData, cs: list[Case],
               pushed_vectors: torch.Tensor | None = None, batch_size: int = 512) -> np.ndarray:
    """(n, C) scores of a sequential model on the lists; ``pushed_vectors`` (n, d), when
    given, replace each case's pushed candidate's item vector (a triggered title)."""
    device = next(iter(model.parameters())).device if list(model.parameters()) else \
        torch.device("cpu")
    was = model.training
    model.eval()
    try:
        out = []
        items = model.item_vectors().float()
        for s in range(0, len(cs), batch_size):
            part = cs[s:s + batch_size]
            inp = torch.from_numpy(pad_left([c.history for c in part], model.max_len))
            user = model.user_vectors(inp.to(device)).float()
            cand = torch.from_numpy(np.stack([c.candidates for c in part])).to(device)
            vec = items[cand]  # (B, C, d)
            if pushed_vectors is not None:
                rows = torch.arange(len(part), device=device)
                at = torch.tensor([c.pushed for c in part], device=device)
                vec = vec.clone()
                vec[rows, at] = pushed_vectors[s:s + len(part)].to(device).float()
            out.append(torch.einsum("bd,bcd->bc", user, vec).cpu().numpy())
        return np.concatenate(out).astype(np.float64)
    finally:
        model.train(was)
