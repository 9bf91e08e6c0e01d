"""Across-seed statistics: the CI and the pairing every printed comparison relies on."""

import math

import numpy as np

from recsec_ray.stats import mean_ci, paired_difference, paired_ratio


def test_mean_ci_hand_computed():
    est = mean_ci([1.0, 2.0, 3.0])  # sd 1, se 1/sqrt(3), t(0.975, 2) = 4.3027
    assert est.n == 3 and est.mean == 2.0
    assert math.isclose(est.half, 4.302653 / math.sqrt(3), rel_tol=1e-5)
    assert est.text(2) == "2.00 ± 2.48" and not est.excludes(0.0) and est.excludes(-1.0)


def test_one_value_has_no_interval_and_nan_is_dropped():
    est = mean_ci([0.5, float("nan")])
    assert est.n == 1 and math.isnan(est.half) and est.text(1) == "0.5"
    assert not est.excludes(0.0)
    assert mean_ci([]).text() == "–"


def test_pairing_cancels_what_both_arms_share():
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 1.0, 5)  # large, shared by both arms of each seed
    base = {s: 10 + seed_effect[s] for s in range(5)}
    treated = {s: base[s] - 0.3 + 0.01 * s for s in range(5)}
    assert not (mean_ci(list(treated.values())).hi < mean_ci(list(base.values())).lo)
    diff = paired_difference(treated, base)
    assert diff.excludes(0.0) and diff.hi < 0 and diff.text(marker=True).endswith("*")
    assert paired_difference({0: 1.0, 9: 5.0}, {0: 0.5}).n == 1  # only matching seeds pair


def test_paired_ratio_skips_zero_baselines():
    est = paired_ratio({0: 0.2, 1: 0.3, 2: 0.1}, {0: 0.4, 1: 0.6, 2: 0.0})
    assert est.n == 2 and math.isclose(est.mean, 0.5)
