"""Where recsec-ray keeps what it derives: one root, so one variable moves every cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$RECSEC_CACHE_DIR`` or ``~/.cache/recsec_ray``: preprocessed data, LLM results,
    converted models and adapters, each in its own subfolder."""
    return Path(os.environ.get("RECSEC_CACHE_DIR") or "~/.cache/recsec_ray").expanduser()
