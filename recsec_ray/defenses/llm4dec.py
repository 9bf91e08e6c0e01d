"""LLM4Dec: an LLM reads each user's history as text and a small classifier calls fraud.

Per user, the fraudster prompt of DESIGN §4 over the ``max_titles`` most recent titles of the
training part; the LLM's mean-pooled embedding of it goes through an MLP trained on the
defender's simulated known-attack fake users (label 1) against every observed user (label 0,
the injected ones included, since the defender cannot tell them apart). As in the reference,
the loss adds an entropy term on label-0 rows (``common.pu_loss``), which lets unlabelled
users who look like the simulated fakes become confident positives; ``llm4dec_loss`` offers a
class-balanced BCE and the non-negative PU risk with a stated prior instead. Flagged users get
weight 0; the threshold comes from a false-positive budget on observed users (``user_fpr``)
unless ``threshold`` fixes one.

This is a positive-unlabelled problem, and the defender has no labelled injected user. The
reference picks its best epoch by F1 on the injected users themselves (ground truth); here it
is picked by AUC of held-out simulated campaigns (whole target sets never trained on) against
held-out observed users, and every observed user is scored out of fold (``cross_fit_scores``).
``llm4dec_view="titles"`` reads per-title embeddings aggregated (mean, spread, coherence)
instead of one embedding of the whole prompt. Zero-shot mode asks the LLM and reads P("Yes")
from its log-probabilities.
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
from ..metrics import roc_auc
from .base import DefenseContext, Sanitation
from .common import pu_loss, robust_threshold
from .simulate import campaigns, simulated_fakes

FOLDS = 5  # cross-fitting folds of the observed users (see ``cross_fit_scores``)
FOLD_CLUSTERS = 20  # k-means clusters packed into those folds (see ``cluster_folds``)


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


def classifier_loss(p: torch.Tensor, y: torch.Tensor, kind: str, *, lam_entropy: float,
                    prior: float) -> torch.Tensor:
    """The classifier's objective on a batch of simulated (y = 1) and observed (y = 0) rows.

    ``pu``: the reference's BCE + entropy on the unlabelled rows (``common.pu_loss``).
    ``balanced``: BCE with each class weighing half, whatever the simulated share.
    ``nnpu``: the non-negative PU risk (Kiryo et al., 2017) with class prior ``prior`` (the
    share of fraudsters the defender assumes among observed users): π·E_P[ℓ(+)] +
    max(0, E_U[ℓ(−)] − π·E_P[ℓ(−)]); when the bracket goes negative the step climbs it back
    instead (their γ = 1, β = 0).
    """
    if kind == "pu":
        return pu_loss(p, y, lam_entropy)
    p = p.clamp(1e-7, 1 - 1e-7)
    pos, unl = y == 1, y == 0
    if not pos.any() or not unl.any():
        return pu_loss(p, y, lam_entropy)
    if kind == "balanced":
        return 0.5 * (-p[pos].log().mean() - (1 - p[unl]).log().mean())
    pos_risk = prior * -p[pos].log().mean()
    neg_risk = -(1 - p[unl]).log().mean() + prior * (1 - p[pos]).log().mean()
    return -neg_risk if neg_risk < 0 else pos_risk + neg_risk


def _holdout(n: int, share: float, rng: np.random.Generator,
             groups: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of held-out rows: ``share`` of them (at least one, never all), whole
    groups at a time when ``groups`` is given."""
    if groups is None or len(np.unique(groups)) < 2:
        mask = np.zeros(n, dtype=bool)
        mask[rng.permutation(n)[:max(1, min(n - 1, int(n * share)))]] = True
        return mask
    ids = rng.permutation(np.unique(groups))
    k = max(1, min(len(ids) - 1, round(len(ids) * share)))
    return np.isin(groups, ids[:k])


def train_classifier(pos: np.ndarray, neg: np.ndarray, *, seed: int, loss: str = "pu",
                     prior: float = 0.05, lam_entropy: float = 0.5,
                     groups: np.ndarray | None = None, epochs: int = 60,
                     batch_size: int = 256, holdout: float = 0.2
                     ) -> tuple[FraudMLP, dict[str, float], np.ndarray, np.ndarray]:
    """Fit the MLP (AdamW lr 0.01, wd 5e-4 as the reference); batches mix positives and
    negatives in proportion. The epoch kept is the one with the best AUC of held-out
    simulated users (whole campaigns, ``groups``, never trained on) against held-out observed
    users: a ranking criterion needs no threshold, and campaigns held out whole keep "these
    targets mean fraud" from passing for skill. Returns (model, stats, feature mean, feature
    std): features are standardised with statistics of all rows so one learning rate suits
    any embedding."""
    rng = np.random.default_rng([seed, 0x11D])
    torch.manual_seed(int(rng.integers(2**31 - 1)))
    mean = np.concatenate([pos, neg]).mean(0)
    std = np.concatenate([pos, neg]).std(0) + 1e-6
    pos, neg = (pos - mean) / std, (neg - mean) / std
    p_held, n_held = _holdout(len(pos), holdout, rng, groups), _holdout(len(neg), holdout, rng)
    pv, pt, nv, nt = pos[p_held], pos[~p_held], neg[n_held], neg[~n_held]
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
            step = classifier_loss(model(x), y, loss, lam_entropy=lam_entropy, prior=prior)
            opt.zero_grad()
            step.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            auc = float(np.nan_to_num(roc_auc(model(x_val).numpy(), y_val)))
        # ties go to the later epoch: a small held-out set saturates (AUC 1) within a few
        # epochs, and the earliest epoch to touch it is the least trained
        if auc >= best - 1e-12:
            best, best_epoch = auc, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return model, {"val_auc_simulated": best, "best_epoch": float(best_epoch)}, mean, std


def cluster_folds(x: np.ndarray, folds: int, seed: int, clusters: int = FOLD_CLUSTERS
                  ) -> np.ndarray:
    """Fold of each row: k-means clusters of the standardised rows, packed whole into
    ``folds`` folds of similar size (largest cluster first, into the smallest fold).

    An injected campaign is a tight cluster (its users share targets and a filler recipe). In
    random folds most of it trains the classifier as "not fraud" while the rest is scored,
    and the classifier has learnt exactly those users are normal (ML-100K, Bandwagon 5 %:
    user AUC 0.69 against 0.99 when no injected user is among the negatives). Whole clusters
    per fold mean each user is scored by a classifier that never saw users like it."""
    from scipy.cluster.vq import kmeans2

    z = (x - x.mean(0)) / (x.std(0) + 1e-6)
    k = max(folds, min(clusters, len(x) // 4))
    _, label = kmeans2(z.astype(np.float64), k, seed=np.random.default_rng([seed, 0xC1F]),
                       minit="++")
    sizes = np.bincount(label, minlength=k)
    fold_of_cluster = np.zeros(k, dtype=np.int64)
    load = np.zeros(folds, dtype=np.int64)
    for c in np.argsort(-sizes, kind="stable"):
        fold_of_cluster[c] = int(np.argmin(load))
        load[fold_of_cluster[c]] += sizes[c]
    return fold_of_cluster[label]


def cross_fit_scores(pos: np.ndarray, neg: np.ndarray, *, seed: int, folds: int = FOLDS,
                     **fit: object) -> tuple[np.ndarray, dict[str, float]]:
    """p(fraud) of every observed user from a classifier that never saw that user, nor the
    users most like it (``cluster_folds``).

    The observed users are the negatives, injected fakes among them; a classifier scoring the
    users it was fit on memorises those as "not fraud" (injected fakes then rank BELOW real
    users). So each fold is scored by a classifier fit on the other folds (``fit``:
    ``train_classifier``'s options)."""
    folds = max(2, min(folds, len(neg)))
    fold = cluster_folds(neg, folds, seed)
    scores = np.zeros(len(neg), dtype=np.float32)
    fits = []
    for k in range(folds):
        if not (fold == k).any():
            continue
        model, st, mean, std = train_classifier(pos, neg[fold != k], seed=seed * folds + k,
                                                **fit)  # type: ignore[arg-type]
        with torch.no_grad():
            x = torch.as_tensor((neg[fold == k] - mean) / std, dtype=torch.float32)
            scores[fold == k] = model(x).numpy()
        fits.append(st)
    return scores, {**{k: float(np.mean([st[k] for st in fits])) for k in fits[0]},
                    "folds": float(len(fits))}


def title_view(ctx: DefenseContext, train_seqs: list[np.ndarray]) -> np.ndarray:
    """Per user, from the embeddings of its ``max_titles`` most recent titles (each title
    embedded once, cached): their mean, their per-dimension spread, and two coherence figures
    (mean pairwise cosine, length of the mean unit vector). Random fillers make a history
    incoherent in a way one embedding of the whole prompt can blur."""
    if ctx.llm is None:
        raise ModelOutputError(f"defense.name: {ctx.cfg.name} needs an LLM client")
    titles = ctx.data.titles
    table = np.asarray(ctx.llm.embed(titles[1:], model=ctx.llm_settings.embed_model),
                       dtype=np.float32)
    if table.shape[0] != len(titles) - 1 or not np.isfinite(table).all():
        raise ModelOutputError(f"llm.embed_model: {ctx.llm_settings.embed_model!r} returned "
                               f"{table.shape} / non-finite embeddings for {len(titles) - 1} "
                               "titles")
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    rows = []
    for s in train_seqs:
        e = unit[np.asarray(s[-ctx.cfg.max_titles:], dtype=np.int64) - 1]
        k = len(e)
        centre = e.mean(0)
        length = float(np.linalg.norm(centre))
        pairwise = (k * k * length ** 2 - k) / (k * (k - 1)) if k > 1 else 1.0
        rows.append(np.concatenate([centre, e.std(0), [pairwise, length]]))
    return np.asarray(rows, dtype=np.float32)


def user_view(ctx: DefenseContext, train_seqs: list[np.ndarray]) -> np.ndarray:
    """What the classifier reads per user (``defense.llm4dec_view``)."""
    if ctx.cfg.llm4dec_view == "titles":
        return title_view(ctx, train_seqs)
    return embed_users(ctx, train_seqs, ctx.data.titles)


def llm4dec(ctx: DefenseContext) -> Sanitation:
    data, cfg = ctx.data, ctx.cfg
    train = [s[:-2] for s in data.seqs]
    stats: dict[str, float] = {}
    if cfg.zero_shot:
        if ctx.llm is None:
            raise ModelOutputError("defense.name: llm4dec needs an LLM client")
        prompts = user_prompts(train, data.titles, cfg.max_titles, scenario_of(data),
                               zero_shot=True)
        scores = service_p_yes(ctx.llm, prompts, model=ctx.llm_settings.model)
    else:
        sim, targets = simulated_fakes(ctx)
        pos = user_view(ctx, [s[:-2] for s in sim])
        neg = user_view(ctx, train)
        scores, stats = cross_fit_scores(pos, neg, seed=ctx.seed, groups=campaigns(targets),
                                         loss=cfg.llm4dec_loss, prior=cfg.llm4dec_prior,
                                         lam_entropy=cfg.lorec_lambda_entropy)
        stats["n_simulated"] = float(len(sim))
    scores = scores.astype(np.float64)
    # a fixed threshold, or the false-positive budget on observed users: the clean mode's
    # (1 - user_fpr) quantile, robust to the fraudsters among them (``robust_threshold``)
    threshold = cfg.threshold if cfg.threshold is not None else \
        robust_threshold(scores, cfg.user_fpr, logit=True)
    flagged = scores >= threshold
    san = Sanitation.keep_all(data)
    san.user_weights[flagged] = 0.0
    san.user_scores = scores
    san.user_threshold = threshold
    san.stats = {**stats, "flagged_users": float(flagged.sum()), "threshold": threshold}
    return san
