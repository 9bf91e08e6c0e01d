"""Whether a dataset's raw files are on this machine, found the way ``load_dataset`` finds them
but without downloading, reading or creating anything (a sweep checks this before Ray starts).

It runs the registry's own ``locate`` with downloads switched off, so a file is "present"
exactly when a trial would find it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..config import DataConfig
from ..envvars import setenv
from ..errors import DataFileError
from .files import OFFLINE_ENV, data_root


def _no_downloads() -> contextlib.AbstractContextManager[None]:
    return setenv({OFFLINE_ENV: "1"})


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def missing_files(cfg: DataConfig) -> list[Path]:
    """Files a trial would download (empty: all present). Raises ``DataFileError`` naming the
    file and the folder to put it in when nothing can fetch it: offline, or a custom dataset's
    own file; ``ConfigError`` for a setting ``locate`` refuses (an Amazon category name)."""
    from .registry import DATASETS

    if cfg.name == "synthetic":  # generated, no files
        return []
    spec = DATASETS[cfg.name]
    try:
        with _no_downloads():
            spec.locate(cfg, data_root(cfg.data_dir), False)
    except DataFileError as err:
        # files.ensure_files words a file it would fetch as "missing (<why not>); put ...":
        # online, the trial downloads it; a custom dataset's file is "not found", never fetched
        if offline() or not err.problem.startswith("missing ("):
            raise
        return [Path(err.path)]
    return []
