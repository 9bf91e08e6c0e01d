"""The ``recsec data stats`` view of a dataset."""

from __future__ import annotations

import numpy as np

from .sequences import SequenceData


def dataset_stats(data: SequenceData) -> dict:
    """Users, items, interactions, density, sequence-length percentiles; the share of users
    whose last two items share a timestamp (so the tie rule decides the test target) when the
    data came from a file loader and still has its original users; the source note if any."""
    lengths = np.array([len(s) for s in data.seqs], dtype=np.int64)
    n_int = int(lengths.sum())
    out: dict = {
        "name": data.name,
        "users": data.n_users,
        "items": data.n_items,
        "interactions": n_int,
        "density": n_int / max(1, data.n_users * data.n_items),
    }
    if len(lengths):
        p10, p50, p90 = np.percentile(lengths, [10, 50, 90])
        out.update(len_p10=float(p10), len_p50=float(p50), len_p90=float(p90),
                   len_max=int(lengths.max()), len_mean=float(lengths.mean()))
    meta = data.meta
    if "tie_share" in meta and meta.get("n_users") == data.n_users:
        out["tie_rule"] = meta.get("tie_rule")
        out["tie_share"] = meta["tie_share"]
    if meta.get("note"):
        out["note"] = meta["note"]
    return out
