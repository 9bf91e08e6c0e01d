"""The one in-memory form of a dataset: users' time-ordered item sequences plus item titles.

Items are re-indexed 1..n_items (0 is padding); users 0..n_users-1. The leave-one-out split is
derived, never stored: train = seq[:-2], valid target = seq[-2], test target = seq[-1].
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class SequenceData:
    name: str
    seqs: list[np.ndarray]  # per user, int64 item indices in 1..n_items, oldest first
    titles: list[str]  # titles[i] is item i's title; titles[0] == "" (padding)
    user_ids: list[str] = field(default_factory=list)  # original ids, for reports
    item_ids: list[str] = field(default_factory=list)  # original ids; item_ids[0] == ""
    # JSON-friendly facts about the source (tie rule, tie share, partial-data note, checksums);
    # dataset_stats and run params read it, nothing else depends on it
    meta: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.seqs)

    @property
    def n_items(self) -> int:
        return len(self.titles) - 1

    def train_seq(self, u: int) -> np.ndarray:
        return self.seqs[u][:-2]

    def item_counts(self, part: str = "train") -> np.ndarray:
        """Interaction counts per item index (length n_items + 1) over train parts or all."""
        parts = [s[:-2] for s in self.seqs] if part == "train" else self.seqs
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return np.bincount(flat, minlength=self.n_items + 1)

    def with_users(self, extra: list[np.ndarray], extra_ids: list[str] | None = None
                   ) -> SequenceData:
        # ids stay aligned with rows, or stay absent (a defense's view has none)
        ids = (extra_ids or [f"fake-{i}" for i in range(len(extra))]) if self.user_ids else []
        return replace(self, seqs=self.seqs + [np.asarray(s, dtype=np.int64) for s in extra],
                       user_ids=self.user_ids + ids)

    def with_titles(self, titles: list[str]) -> SequenceData:
        assert len(titles) == len(self.titles)
        return replace(self, titles=list(titles))

    # ---- Arrow / Parquet ---------------------------------------------------------------------
    def to_tables(self) -> tuple[pa.Table, pa.Table]:
        users = pa.table({
            "user_id": pa.array(self.user_ids or [str(i) for i in range(self.n_users)]),
            "items": pa.array([s.tolist() for s in self.seqs], type=pa.list_(pa.int32())),
        })
        items = pa.table({
            "item_id": pa.array(self.item_ids or [str(i) for i in range(len(self.titles))]),
            "title": pa.array(self.titles),
        })
        return users, items

    @classmethod
    def from_tables(cls, name: str, users: pa.Table, items: pa.Table) -> SequenceData:
        col = users.column("items").combine_chunks()
        offsets = col.offsets.to_numpy()
        values = col.values.to_numpy().astype(np.int64)
        seqs = [values[offsets[i]:offsets[i + 1]] for i in range(len(col))]
        return cls(name=name, seqs=seqs, titles=items.column("title").to_pylist(),
                   user_ids=users.column("user_id").to_pylist(),
                   item_ids=items.column("item_id").to_pylist())


def pad_left(seqs: list[np.ndarray], max_len: int) -> np.ndarray:
    """Batch of sequences as a (B, max_len) int64 array, most recent item last, 0 = padding."""
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-max_len:]
        if len(s):
            out[i, max_len - len(s):] = s
    return out
