"""Pieces several defenses share, one copy each.

- ``pu_loss``: the positive-unlabelled loss of LLM4Dec's classifier and LoRec's calibrator
  (the reference's): BCE against the labels plus an entropy term on the unlabelled rows (label
  0: every observed user, injected fakes among them), so an unlabelled user who looks like the
  simulated fakes may become a confident positive instead of being pinned to 0.
- ``robust_threshold``: P-Scanner's and ONION's cut for a false-positive budget, set on scores
  of which a minority may be poisoned.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import torch
from torch.nn import functional as F


def pu_loss(p: torch.Tensor, y: torch.Tensor, lam_entropy: float) -> torch.Tensor:
    """Mean over rows of BCE(p, y) + ``lam_entropy`` · entropy(p) on label-0 rows."""
    p = p.clamp(1e-7, 1 - 1e-7)
    bce = F.binary_cross_entropy(p, y, reduction="none")
    entropy = -(p * p.log() + (1 - p) * (1 - p).log())
    return (bce + lam_entropy * entropy * (y == 0)).mean()


def robust_threshold(scores: np.ndarray, fpr: float, *, logit: bool = False) -> float:
    """The (1 - fpr) quantile of the clean mode of ``scores``, assuming it is roughly normal
    (in logit space for probabilities): median + z·1.4826·MAD. Up to half the scores may be
    contaminated (poisoned) without moving it much, unlike a plain quantile, which lands in
    the poison as soon as more than ``fpr`` of the scores are poisoned."""
    x = np.asarray(scores, dtype=np.float64)
    if logit:
        x = np.clip(x, 1e-6, 1 - 1e-6)
        x = np.log(x / (1 - x))
    med = float(np.median(x))
    mad = 1.4826 * float(np.median(np.abs(x - med)))
    cut = med + NormalDist().inv_cdf(1.0 - min(max(fpr, 1e-9), 0.5)) * max(mad, 1e-9)
    return float(1.0 / (1.0 + np.exp(-cut))) if logit else cut
