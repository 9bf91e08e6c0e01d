"""Interactions as read from a source file, before any preprocessing.

Every reader ends in :func:`make_interactions`, so the checks shared by all formats (negative
timestamps, duplicate rows, ids coded in a stable order) live in one place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataFileError

log = logging.getLogger(__name__)


@dataclass
class Interactions:
    """Rows in file order. ``user``/``item`` are codes into ``user_ids``/``item_ids``, which are
    sorted (numerically when every id is an integer), so code order == original id order."""

    user: np.ndarray  # int64 codes
    item: np.ndarray  # int64 codes
    ts: np.ndarray  # int64 seconds
    rating: np.ndarray | None  # float64, NaN = no rating; None when the format has none
    user_ids: list[str]
    item_ids: list[str]
    titles: list[str | None]  # per item code; None = no title known


def code_ids(values) -> tuple[np.ndarray, list[str]]:
    """Codes 0..k-1 for arbitrary ids, in numeric order when all are integers, else lexical."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        uniq, codes = np.unique(arr, return_inverse=True)
        return codes.astype(np.int64), [str(int(v)) for v in uniq]
    arr = arr.astype(str)
    uniq, codes = np.unique(arr, return_inverse=True)
    try:
        as_int = uniq.astype(np.int64)
    except (ValueError, OverflowError):
        return codes.astype(np.int64), uniq.tolist()
    order = np.argsort(as_int, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[codes].astype(np.int64), uniq[order].tolist()


def make_interactions(path: Path, users, items, ts: np.ndarray, rating: np.ndarray | None,
                      lines: np.ndarray, titles: dict[str, str], *, on_duplicate: str
                      ) -> Interactions:
    """Code ids, check timestamps and duplicate (user, item) rows, attach titles.

    ``on_duplicate``: "error" for formats whose release has one rating per (user, item)
    (MovieLens: a repeat means a corrupted or concatenated file); "drop" for logs where repeats
    are real (Amazon re-reviews, custom data): the earliest interaction is kept and the count
    logged, because a sequential model must not be asked to predict an item already seen.
    """
    if len(ts) == 0:
        raise DataFileError(path, "no interactions in file")
    if ts.min() < 0:
        i = int(np.argmax(ts < 0))
        raise DataFileError(path, f"negative timestamp {int(ts[i])}", int(lines[i]))
    u, user_ids = code_ids(users)
    it, item_ids = code_ids(items)
    # duplicates: sort by (user, item, ts, line); a row equal in (user, item) to its predecessor
    order = np.lexsort((lines, ts, it, u))
    dup_sorted = np.zeros(len(order), dtype=bool)
    dup_sorted[1:] = (u[order][1:] == u[order][:-1]) & (it[order][1:] == it[order][:-1])
    if dup_sorted.any():
        dups = order[dup_sorted]
        if on_duplicate == "error":
            j = int(np.argmin(np.where(dup_sorted, lines[order], np.iinfo(np.int64).max)))
            first = int(lines[order][j - 1])
            row = int(lines[order][j])
            raise DataFileError(path, f"duplicate row for user {user_ids[u[order][j]]} item "
                                      f"{item_ids[it[order][j]]} (also at line {first})", row)
        log.warning("%s: dropped %d repeated (user, item) rows, kept each pair's earliest "
                    "(first repeat at line %d)", path, len(dups), int(lines[dups].min()))
        keep = np.ones(len(ts), dtype=bool)
        keep[dups] = False
        u, it, ts = u[keep], it[keep], ts[keep]
        rating = rating[keep] if rating is not None else None
    return Interactions(user=u, item=it, ts=ts.astype(np.int64), rating=rating,
                        user_ids=user_ids, item_ids=item_ids,
                        titles=[titles.get(i) for i in item_ids])
