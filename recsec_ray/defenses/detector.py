"""A statistical fake-user detector: unsupervised, no LLM, no simulated attack.

Classic shilling detectors flag profiles whose simple statistics sit far from the crowd. Per
user (training part only) we compute:

- ``log_len``: profile size;
- ``pop_mean`` / ``pop_std``: mean and spread of the items' log-popularity (bandwagon profiles
  mix hits with random items, random fillers are flat);
- ``head_share``: share of items among the 100 most popular;
- ``tail_share``: share of items in the less popular half (targets live there);
- ``transition``: mean log-support of the user's consecutive item pairs, i.e. in how many other
  profiles the same two items sit within three positions of each other. Injected profiles are
  shuffled bags, so their neighbours rarely co-occur that closely elsewhere.

Features are centred on the median and scaled by the MAD, whitened by PCA over all users, and
each user's distance from the centre becomes a robust z-score; users beyond 3.5 (Iglewicz and
Hoaglin's cut-off for modified z-scores) are flagged and get weight 0. ``user_scores`` is
``sigmoid(z - 3.5)``, so the decision threshold is 0.5.
"""

from __future__ import annotations

import numpy as np

from ..data.sequences import SequenceData
from .base import DefenseContext, Sanitation

CUTOFF = 3.5
WINDOW = 3
HEAD = 100
FEATURES = ("log_len", "pop_mean", "pop_std", "head_share", "tail_share", "transition")


def _robust_z(x: np.ndarray) -> np.ndarray:
    med = np.median(x, axis=0)
    mad = 1.4826 * np.median(np.abs(x - med), axis=0)
    scale = np.where(mad > 1e-9, mad, x.std(axis=0) + 1e-9)
    return (x - med) / scale


def _pair_support(seqs: list[np.ndarray], n_items: int) -> dict[int, int]:
    """Number of profiles in which items a, b (a != b) sit within WINDOW positions."""
    keys = []
    base = n_items + 1
    for s in seqs:
        pairs = set()
        for k in range(1, WINDOW + 1):
            a, b = s[:-k], s[k:]
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            pairs.update((lo * base + hi).tolist())
        keys.extend(pairs)
    if not keys:
        return {}
    uniq, counts = np.unique(np.asarray(keys, dtype=np.int64), return_counts=True)
    return dict(zip(uniq.tolist(), counts.tolist(), strict=True))


def user_features(data: SequenceData) -> np.ndarray:
    train = [s[:-2] for s in data.seqs]
    counts = data.item_counts("train").astype(np.float64)
    logpop = np.log1p(counts)
    seen = np.flatnonzero(counts[1:] > 0) + 1
    head = set(seen[np.argsort(-counts[seen], kind="stable")][:HEAD].tolist())
    tail = set(seen[np.argsort(counts[seen], kind="stable")][: len(seen) // 2].tolist())
    support = _pair_support(train, data.n_items)
    base = data.n_items + 1
    rows = []
    for s in train:
        if len(s) == 0:
            rows.append([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            continue
        lp = logpop[s]
        lo, hi = np.minimum(s[:-1], s[1:]), np.maximum(s[:-1], s[1:])
        # the user's own profile counts once in every support: subtract it
        trans = [np.log1p(support.get(int(k), 1) - 1) for k in (lo * base + hi)]
        rows.append([np.log1p(len(s)), lp.mean(), lp.std(),
                     np.mean([i in head for i in s.tolist()]),
                     np.mean([i in tail for i in s.tolist()]),
                     float(np.mean(trans)) if trans else 0.0])
    return np.asarray(rows, dtype=np.float64)


def outlier_z(features: np.ndarray) -> np.ndarray:
    """Robust z-score of each row's distance from the median after PCA whitening."""
    z = _robust_z(features)
    z = z - z.mean(0)
    _, sv, vt = np.linalg.svd(z, full_matrices=False)
    keep = sv > 1e-6 * sv.max() if sv.size and sv.max() > 0 else np.zeros(0, dtype=bool)
    proj = z @ vt[keep].T / (sv[keep] / np.sqrt(max(len(z) - 1, 1)))
    dist = np.sqrt((proj**2).sum(1))
    return _robust_z(dist[:, None])[:, 0]


def detector(ctx: DefenseContext) -> Sanitation:
    feats = user_features(ctx.data)
    z = outlier_z(feats)
    scores = 1.0 / (1.0 + np.exp(-(z - CUTOFF)))
    flagged = z > CUTOFF
    san = Sanitation.keep_all(ctx.data)
    san.user_weights[flagged] = 0.0
    san.user_scores = scores
    san.user_threshold = 0.5
    san.stats = {"flagged_users": float(flagged.sum())}
    return san
