"""The catalogue-scale synthetic generator (``bench_scale``'s data) has the shape it promises."""

from __future__ import annotations

import numpy as np
import pytest

from recsec_ray.data.synth import synthetic_interactions


def test_sizes_lengths_order_and_seed():
    table, titles = synthetic_interactions(2000, 500, 20_000, seed=4)
    user, item, ts = table["user"], table["item"], table["timestamp"]
    assert 0.98 * 20_000 <= len(user) <= 20_000  # repeats dropped, nothing else
    assert len(titles) == len(set(titles)) == 500
    assert item.min() >= 1 and item.max() <= 500
    counts = np.bincount(user, minlength=2000)
    assert counts.min() >= 3 and np.median(counts) >= 8
    pairs = set(zip(user.tolist(), item.tolist()))
    assert len(pairs) == len(user)  # no user holds an item twice
    same_user = user[1:] == user[:-1]
    assert (ts[1:][same_user] > ts[:-1][same_user]).all()  # strictly increasing per user
    again, _ = synthetic_interactions(2000, 500, 20_000, seed=4)
    assert all(np.array_equal(table[k], again[k]) for k in table)
    other, _ = synthetic_interactions(2000, 500, 20_000, seed=5)
    assert not np.array_equal(table["item"][:500], other["item"][:500])


def test_next_items_follow_a_learnable_chain():
    """Most next items are one of two successors of the current one (a chain a model can
    learn), the rest popular jumps."""
    table, _ = synthetic_interactions(3000, 400, 30_000, seed=0)
    user, item = table["user"], table["item"]
    same = user[1:] == user[:-1]
    prev, nxt = item[:-1][same], item[1:][same]
    top2 = sum(np.sort(np.bincount(nxt[prev == a]))[-2:].sum() for a in np.unique(prev))
    assert top2 / len(prev) > 0.6


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="n_interactions"):
        synthetic_interactions(100, 50, 400, seed=0)
