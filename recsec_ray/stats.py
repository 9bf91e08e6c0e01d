"""Across-seed statistics behind every comparison the toolkit prints: mean ± 95 % CI (Student t
over seeds) and paired differences against a matching baseline trial (same seed, targets and
fake users), so seed-to-seed variation that both arms share cancels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    mean: float
    half: float  # half-width of the 95 % CI (nan with fewer than two values)
    n: int

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half

    def excludes(self, value: float = 0.0) -> bool:
        """Whether the CI lies wholly on one side of ``value``."""
        return not math.isnan(self.half) and (self.lo > value or self.hi < value)

    def text(self, digits: int = 4, marker: bool = False) -> str:
        """``0.0123 ± 0.0040`` (``*`` appended with ``marker`` when the CI excludes zero);
        one value prints alone, since a CI needs two."""
        if math.isnan(self.mean):
            return "–"
        if self.n < 2 or math.isnan(self.half):
            return f"{self.mean:.{digits}f}"
        star = " *" if marker and self.excludes(0.0) else ""
        return f"{self.mean:.{digits}f} ± {self.half:.{digits}f}{star}"


def mean_ci(values: np.ndarray | list[float]) -> Estimate:
    """Mean and the half-width of its 95 % t-interval over the finite values."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not len(x):
        return Estimate(float("nan"), float("nan"), 0)
    if len(x) < 2:
        return Estimate(float(x[0]), float("nan"), 1)
    sem = float(x.std(ddof=1)) / math.sqrt(len(x))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, len(x) - 1)) * sem
    return Estimate(float(x.mean()), half, len(x))


def paired_difference(treated: dict, baseline: dict) -> Estimate:
    """Mean ± CI of ``treated[k] - baseline[k]`` over the keys (seeds) both have."""
    keys = sorted(set(treated) & set(baseline))
    return mean_ci([treated[k] - baseline[k] for k in keys])


def paired_ratio(treated: dict, baseline: dict) -> Estimate:
    """Mean ± CI of the per-seed ratio ``treated[k] / baseline[k]`` (seeds whose baseline is
    zero are skipped): "LoRec keeps 0.4× the undefended push", paired."""
    keys = sorted(k for k in set(treated) & set(baseline) if baseline[k])
    return mean_ci([treated[k] / baseline[k] for k in keys])
