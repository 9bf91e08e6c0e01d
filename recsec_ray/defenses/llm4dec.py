"""LLM4Dec: an LLM reads each user's history as text and a small classifier calls fraud.

Per user, the fraudster prompt of DESIGN §4 over the ``max_titles`` most recent titles of the
training part; the LLM's mean-pooled embedding of it goes through an MLP trained on the
defender's simulated known-attack fake users (label 1) against every observed user (label 0,
the injected ones included, since the defender cannot tell them apart). As in the reference,
the loss adds an entropy term on label-0 rows (``common.pu_loss``), which lets unlabelled
users who look like the simulated fakes become confident positives. Users with
``p >= threshold`` get weight 0.

The reference picks its best epoch by F1 on the injected users themselves (ground truth); we
never see those, so the epoch is picked on held-out simulated fakes against held-out observed
users instead, and every observed user is scored out of fold (``cross_fit_scores``).
Zero-shot mode asks the LLM and reads P("Yes") from its log-probabilities.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.registry import catalogue_words
from ..data.sequences import SequenceData
from ..errors import ModelOutputError
from ..llm.answers import service_p_yes
from ..llm.prompts import llm4dec_prompt, llm4dec_zero_shot_prompt
from ..metrics import detection_metrics
from .base import DefenseContext, Sanitation
from .common import pu_loss
from .simulate import simulated_fakes

FOLDS = 5  # cross-fitting folds of the observed users (see ``cross_fit_scores``)


def user_prompts(train_seqs: list[np.ndarray], titles: list[str], max_titles: int,
                 scenario: str, zero_shot: bool = False) -> list[str]:
    make = llm4dec_zero_shot_prompt if zero_shot else llm4dec_prompt
    return [make([titles[i] for i in s[-max_titles:]], scenario) for s in train_seqs]


def scenario_of(data: SequenceData) -> str:
    """The recommendation scenario named in prompts (the reference's ``recommendation_scenario``),
    as the dataset registry declares it."""
    return catalogue_words(data.name).scenario


def embed_users(ctx: DefenseContext, train_seqs: list[np.ndarray], titles: list[str]
                ) -> np.ndarray:
    """LLM embeddings of the users' fraudster prompts, through the shared client (cached)."""
    if ctx.llm is None:
        raise ModelOutputError(f"defense.name: {ctx.cfg.name} needs an LLM client")
    prompts = user_prompts(train_seqs, titles, ctx.cfg.max_titles, scenario_of(ctx.data))
    emb = np.asarray(ctx.llm.embed(prompts, model=ctx.llm_settings.embed_model),
                     dtype=np.float32)
    if emb.shape[0] != len(prompts) or not np.isfinite(emb).all():
        raise ModelOutputError(f"llm.embed_model: {ctx.llm_settings.embed_model!r} returned "
                               f"{emb.shape} / non-finite embeddings for {len(prompts)} prompts")
    return emb


class FraudMLP(nn.Module):
    """The reference detector: Linear+GELU, one Dropout+Linear+GELU layer, then the head
    Linear(→128)+BN+Dropout+GELU+Linear(→1)+BN and a sigmoid."""

    def __init__(self, in_dim: int, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, hidden), nn.GELU())
        self.head = nn.Sequential(nn.Linear(hidden, 128), nn.BatchNorm1d(128),
                                  nn.Dropout(dropout), nn.GELU(), nn.Linear(128, 1),
                                  nn.BatchNorm1d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.body(x))).squeeze(-1)


def train_classifier(pos: np.ndarray, neg: np.ndarray, *, seed: int, threshold: float,
                     lam_entropy: float = 0.5, epochs: int = 60, batch_size: int = 256,
                     holdout: float = 0.2) -> tuple[FraudMLP, dict[str, float], np.ndarray,
                                                    np.ndarray]:
    """Fit the MLP (AdamW lr 0.01, wd 5e-4 as the reference); batches mix positives and
    negatives in proportion. Returns (model, stats, feature mean, feature std): features are
    standardised with statistics of all rows so one learning rate suits any embedding model."""
    rng = np.random.default_rng([seed, 0x11D])
    torch.manual_seed(int(rng.integers(2**31 - 1)))
    mean = np.concatenate([pos, neg]).mean(0)
    std = np.concatenate([pos, neg]).std(0) + 1e-6
    pos, neg = (pos - mean) / std, (neg - mean) / std
    pos_perm, neg_perm = rng.permutation(len(pos)), rng.permutation(len(neg))
    n_pv, n_nv = max(1, int(len(pos) * holdout)), max(1, int(len(neg) * holdout))
    pv, pt = pos[pos_perm[:n_pv]], pos[pos_perm[n_pv:]]
    nv, nt = neg[neg_perm[:n_nv]], neg[neg_perm[n_nv:]]
    x_val = torch.as_tensor(np.concatenate([pv, nv]), dtype=torch.float32)
    y_val = np.concatenate([np.ones(len(pv)), np.zeros(len(nv))])

    model = FraudMLP(pos.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=5e-4)
    best, best_state, best_epoch = -1.0, None, 0
    for epoch in range(epochs):
        model.train()
        n_batches = -(-max(len(pt), len(nt)) // batch_size)
        for p_idx, n_idx in zip(np.array_split(rng.permutation(len(pt)), n_batches),
                                np.array_split(rng.permutation(len(nt)), n_batches),
                                strict=True):
            if len(p_idx) + len(n_idx) < 2:
                continue
            x = torch.as_tensor(np.concatenate([pt[p_idx], nt[n_idx]]), dtype=torch.float32)
            y = torch.cat([torch.ones(len(p_idx)), torch.zeros(len(n_idx))])
            loss = pu_loss(model(x), y, lam_entropy)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            p_val = model(x_val).numpy()
        f1 = float(np.nan_to_num(detection_metrics(p_val, y_val, threshold, "val")["val_f1"]))
        if f1 > best + 1e-12:  # ties (up to rounding) keep the earlier epoch
            best, best_epoch = f1, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return model, {"val_f1_simulated": best, "best_epoch": float(best_epoch)}, mean, std


def cross_fit_scores(pos: np.ndarray, neg: np.ndarray, *, seed: int, threshold: float,
                     lam_entropy: float, folds: int = FOLDS) -> tuple[np.ndarray,
                                                                     dict[str, float]]:
    """p(fraud) of every observed user from a classifier that never saw that user.

    The observed users are the negatives, injected fakes among them; a classifier scoring the
    users it was fit on memorises those as "not fraud" (injected fakes then rank BELOW real
    users). So each of ``folds`` seeded folds is scored by a classifier fit on the other folds."""
    folds = max(2, min(folds, len(neg)))
    fold = np.random.default_rng([seed, 0xF01D]).permutation(len(neg)) % folds
    scores = np.zeros(len(neg), dtype=np.float32)
    fits = []
    for k in range(folds):
        model, st, mean, std = train_classifier(pos, neg[fold != k], seed=seed * folds + k,
                                                threshold=threshold, lam_entropy=lam_entropy)
        with torch.no_grad():
            x = torch.as_tensor((neg[fold == k] - mean) / std, dtype=torch.float32)
            scores[fold == k] = model(x).numpy()
        fits.append(st)
    return scores, {**{k: float(np.mean([st[k] for st in fits])) for k in fits[0]},
                    "folds": float(folds)}


def llm4dec(ctx: DefenseContext) -> Sanitation:
    data = ctx.data
    train = [s[:-2] for s in data.seqs]
    stats: dict[str, float] = {}
    if ctx.cfg.zero_shot:
        if ctx.llm is None:
            raise ModelOutputError("defense.name: llm4dec needs an LLM client")
        prompts = user_prompts(train, data.titles, ctx.cfg.max_titles, scenario_of(data),
                               zero_shot=True)
        scores = service_p_yes(ctx.llm, prompts, model=ctx.llm_settings.model)
    else:
        sim, _ = simulated_fakes(ctx)
        pos = embed_users(ctx, [s[:-2] for s in sim], data.titles)
        neg = embed_users(ctx, train, data.titles)
        scores, stats = cross_fit_scores(pos, neg, seed=ctx.seed, threshold=ctx.cfg.threshold,
                                         lam_entropy=ctx.cfg.lorec_lambda_entropy)
        stats["n_simulated"] = float(len(sim))
    scores = scores.astype(np.float64)
    flagged = scores >= ctx.cfg.threshold
    san = Sanitation.keep_all(data)
    san.user_weights[flagged] = 0.0
    san.user_scores = scores
    san.user_threshold = ctx.cfg.threshold
    san.stats = {**stats, "flagged_users": float(flagged.sum())}
    return san
