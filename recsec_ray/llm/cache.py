"""Content-addressed result cache shared by every trial and kept on disk between runs.

Key = sha256 of (backend, model files, adapter weights, call, params, text), so a retrained
adapter or another model never answers from stale entries. Stored in SQLite (WAL mode, busy
timeout): many processes — the actor, in-process clients of parallel trials — read and write
it concurrently. Values are ``np.save`` bytes (loaded with ``allow_pickle=False``) or UTF-8
text; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 500  # keys per SELECT (SQLite's variable limit is 32766; keep statements small)


def make_key(*parts: Any) -> str:
    blob = json.dumps(parts, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def _encode(value: Any) -> bytes:
    if isinstance(value, str):
        return b"S" + value.encode("utf-8", "surrogatepass")
    buf = io.BytesIO()
    np.save(buf, np.asarray(value), allow_pickle=False)
    return b"A" + buf.getvalue()


def _decode(blob: bytes) -> Any:
    if blob[:1] == b"S":
        return blob[1:].decode("utf-8", "surrogatepass")
    return np.load(io.BytesIO(blob[1:]), allow_pickle=False)


class ResultCache:
    """``get_many(keys) -> {key: value}`` and ``put_many({key: value})``; thread-safe."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder).expanduser() / "llm_cache.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, "
                         "value BLOB NOT NULL)")

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        uniq = list(dict.fromkeys(keys))
        with self._lock:
            for s in range(0, len(uniq), _CHUNK):
                part = uniq[s:s + _CHUNK]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(f"SELECT key, value FROM results WHERE key IN ({marks})",
                                        part).fetchall()
                found.update((k, _decode(v)) for k, v in rows)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        if not items:
            return
        rows = [(k, _encode(v)) for k, v in items.items()]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
