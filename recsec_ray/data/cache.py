"""Parquet cache of preprocessed datasets, keyed by source checksums + preprocessing config.

One entry = one folder ``<cache>/<name>-<key>/`` with ``users.parquet``, ``items.parquet``
and ``meta.json``. It is built in a temporary sibling folder and renamed into place in one
``os.replace``, so a crash or error mid-write leaves no entry (and the temporary folder is
removed); concurrent trials that build the same entry simply keep the first one renamed in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .files import cache_root
from .sequences import SequenceData

log = logging.getLogger(__name__)

# bump when preprocessing changes meaning, so old entries are not reused
CACHE_VERSION = 1


def cache_key(name: str, sources: dict[str, str], params: dict) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "name": name, "sources": sources, "params": params},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def entry_dir(name: str, key: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / f"{name}-{key[:24]}"


def load(name: str, key: str, root: Path | None = None) -> SequenceData | None:
    folder = entry_dir(name, key, root)
    if not folder.is_dir():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("key") != key:
            return None
        users = pq.ParquetFile(folder / "users.parquet").read()
        items = pq.ParquetFile(folder / "items.parquet").read()
    except (OSError, ValueError, pa.ArrowException) as err:
        log.warning("cache entry %s unreadable (%s); rebuilding it", folder, err)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    data = SequenceData.from_tables(name, users, items)
    data.meta.update(meta.get("data_meta", {}))
    return data


def save(data: SequenceData, key: str, extra: dict, root: Path | None = None) -> Path:
    folder = entry_dir(data.name, key, root)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        users, items = data.to_tables()
        pq.write_table(users, tmp / "users.parquet")
        pq.write_table(items, tmp / "items.parquet")
        meta = {"key": key, "data_meta": data.meta, **extra}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        try:
            os.replace(tmp, folder)
        except OSError:
            if not folder.is_dir():  # another process won the race otherwise; keep theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
