"""Datasets: original-format readers, download + checksum, preprocessing, Parquet cache.

``load_dataset(cfg)`` is the one entry point: locate (or download) the raw files, hash them,
return the cached preprocessed data for (hashes, preprocessing config) if present, else read,
preprocess and cache it. See ``files`` (folders, checksums), ``preprocessing`` (the steps) and
``cache`` (atomic entries).
"""

from __future__ import annotations

import logging
import time

from ..config import DataConfig
from . import cache
from .files import data_root, file_sha256, verify
from .preprocessing import preprocess
from .registry import DATASETS, Dataset
from .sequences import SequenceData, pad_left
from .stats import dataset_stats
from .synth import synthetic

log = logging.getLogger(__name__)

DATASET_NAMES = tuple(DATASETS)

__all__ = ["DATASETS", "DATASET_NAMES", "Dataset", "SequenceData", "dataset_stats",
           "load_dataset", "pad_left", "preprocess_params", "synthetic"]


def preprocess_params(cfg: DataConfig) -> dict:
    """The config values the preprocessed result depends on (the cache key's config part)."""
    params = {"min_rating": cfg.min_rating, "k_core": cfg.k_core, "max_len": cfg.max_len,
              "tie_rule": cfg.tie_rule}
    if cfg.tie_rule == "random":
        params["seed"] = cfg.seed
    if cfg.name == "amazon":
        params["category"] = cfg.category
    return params


def load_dataset(cfg: DataConfig, *, progress: bool = False) -> SequenceData:
    """Preprocessed ``SequenceData`` for ``cfg``; raises ``DataFileError`` (one line naming the
    file and line) on a malformed or missing file, ``ConfigError`` on an unusable setting."""
    if cfg.name == "synthetic":
        return synthetic(cfg.synthetic_users, cfg.synthetic_items, cfg.seed, cfg.max_len)
    spec = DATASETS[cfg.name]
    files = spec.locate(cfg, data_root(cfg.data_dir), progress)
    note = spec.note(files)
    if note:
        log.warning("%s: %s", cfg.name, note)
    sums = {}
    for role, path in files.items():
        sums[role] = file_sha256(path)
        verify(cfg.name, path, sums[role])
    params = preprocess_params(cfg)
    key = cache.cache_key(cfg.name, sums, params)
    data = cache.load(cfg.name, key)
    if data is not None:
        log.info("%s: preprocessed data from cache %s", cfg.name, key[:12])
        return data
    t0 = time.perf_counter()
    raw = spec.read(files, progress)
    data = preprocess(raw, cfg, cfg.name)
    data.meta.update({"files": {r: p.name for r, p in files.items()}, "sha256": sums,
                      "params": params})
    if note:
        data.meta["note"] = note
    log.info("%s: read and preprocessed in %.2f s", cfg.name, time.perf_counter() - t0)
    try:
        cache.save(data, key, {"files": {r: str(p) for r, p in files.items()}})
    except OSError as err:  # a read-only cache costs time, not correctness
        log.warning("%s: could not write the cache (%s); continuing uncached", cfg.name, err)
    return data
