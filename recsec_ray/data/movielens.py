"""MovieLens readers for the original GroupLens release formats.

ML-100K: ``u.data`` (TAB: user, item, rating, unix time), ``u.item`` ('|', latin-1, 24 fields).
ML-1M: ``ratings.dat`` ('::': user, movie, rating, unix time), ``movies.dat`` ('::', latin-1:
id, title, genres). The shared data folder holds only a partial ML-1M ratings file
(``ratings_users1-2999.dat.gz``); it is accepted and flagged wherever it is used.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import DataFileError
from .raw import Interactions, make_interactions
from .textio import (
    decode,
    fast_numeric_table,
    float_column,
    int_column,
    line_no,
    read_bytes,
    split_fields,
    split_lines,
)

log = logging.getLogger(__name__)

ML1M_PARTIAL = "ratings_users1-2999.dat.gz"
ML1M_PARTIAL_NOTE = ("PARTIAL ML-1M: ratings of users 1-2999 only (ratings_users1-2999.dat.gz, "
                     "~49% of the 1,000,209 ratings); not comparable with full-ML-1M results")


def _ratings(path: Path, sep: str) -> tuple[np.ndarray, ...]:
    data = read_bytes(path)
    fast = fast_numeric_table(data, sep, ("int", "int", "float", "int"))
    if fast is not None and np.isfinite(fast[2]).all() and (fast[3] >= 0).all():
        user, item, rating, ts = fast
        return user, item, rating, ts, np.arange(1, len(ts) + 1)
    text = decode(path, data, "latin-1")
    lines, linenos = split_lines(text)
    cols = split_fields(path, lines, linenos, sep, 4, "user, item, rating, timestamp")
    user = int_column(path, cols[0], linenos, "user id")
    item = int_column(path, cols[1], linenos, "item id")
    rating = float_column(path, cols[2], linenos, "rating")
    ts = int_column(path, cols[3], linenos, "timestamp", nonneg=True)
    lines_arr = linenos if linenos is not None else np.arange(1, len(lines) + 1)
    return user, item, rating, ts, lines_arr


def _latin1(path: Path, data: bytes) -> str:
    """The releases are latin-1. A copy re-saved as UTF-8 would decode to mojibake ("CafÃ©")
    without error; real latin-1 accents are almost never valid UTF-8, so decode such a file as
    UTF-8 and say so."""
    if max(data, default=0) >= 0x80:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
        log.warning("%s: is UTF-8, not the release's latin-1; decoded as UTF-8", path)
        return text
    return data.decode("latin-1")


def _titles(path: Path, sep: str, n_fields: int) -> dict[str, str]:
    text = _latin1(path, read_bytes(path))
    lines, linenos = split_lines(text)
    cols = split_fields(path, lines, linenos, sep, n_fields, "item id, title, ...")
    ids = int_column(path, cols[0], linenos, "item id")
    titles: dict[str, str] = {}
    for i, (iid, title) in enumerate(zip(ids.tolist(), cols[1])):
        key = str(iid)
        if key in titles:
            raise DataFileError(path, f"duplicate item id {iid}", line_no(linenos, i))
        titles[key] = title.strip()
    return titles


def read_ml100k(files: dict[str, Path]) -> Interactions:
    user, item, rating, ts, lines = _ratings(files["ratings"], "\t")
    titles = _titles(files["titles"], "|", 24)
    return make_interactions(files["ratings"], user, item, ts, rating, lines, titles,
                             on_duplicate="error")


def read_ml1m(files: dict[str, Path]) -> Interactions:
    user, item, rating, ts, lines = _ratings(files["ratings"], "::")
    titles = _titles(files["titles"], "::", 3)
    return make_interactions(files["ratings"], user, item, ts, rating, lines, titles,
                             on_duplicate="error")
