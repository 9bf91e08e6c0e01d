"""Amazon Reviews 2018 (Ni, Li & McAuley, EMNLP 2019), one category at a time.

``<Category>.json.gz``: one review per line with reviewerID, asin, unixReviewTime, overall.
``meta_<Category>.json.gz``: one product per line with asin, title. Lines are JSON; the older
dumps wrote Python dict literals instead, which are read with ``ast.literal_eval`` (never
``eval``: the files are untrusted).
"""

from __future__ import annotations

import ast
import html
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFileError
from .raw import Interactions, make_interactions
from .textio import open_lines

log = logging.getLogger(__name__)

URL_REVIEWS = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/categoryFiles/{}.json.gz"
URL_META = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/metaFiles2/meta_{}.json.gz"


def _record(path: Path, n: int, raw: bytes) -> dict[str, Any]:
    try:
        rec = json.loads(raw)
    except UnicodeDecodeError:
        raise DataFileError(path, "not valid UTF-8 text", n) from None
    except ValueError:
        try:
            rec = ast.literal_eval(raw.decode("utf-8").strip())
        except UnicodeDecodeError:
            raise DataFileError(path, "not valid UTF-8 text", n) from None
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataFileError(path, "not a JSON object (nor a Python dict literal); "
                                      "truncated or corrupt line", n) from None
    if not isinstance(rec, dict):
        raise DataFileError(path, f"expected a JSON object, found {type(rec).__name__}", n)
    return rec


def _field(path: Path, n: int, rec: dict[str, Any], key: str) -> Any:
    if key not in rec or rec[key] in (None, ""):
        raise DataFileError(path, f"missing field {key!r}", n)
    return rec[key]


def _lines(path: Path, progress: bool):
    it = open_lines(path)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=path.name, unit=" lines", mininterval=1.0)
    for n, raw in it:
        if raw.strip():
            yield n, raw


def read_reviews(path: Path, progress: bool = False):
    users: list[str] = []
    items: list[str] = []
    ts: list[int] = []
    rating: list[float] = []
    lines: list[int] = []
    for n, raw in _lines(path, progress):
        rec = _record(path, n, raw)
        users.append(str(_field(path, n, rec, "reviewerID")))
        items.append(str(_field(path, n, rec, "asin")))
        t = _field(path, n, rec, "unixReviewTime")
        try:
            ts.append(int(t))
        except (TypeError, ValueError):
            raise DataFileError(path, f"non-numeric unixReviewTime {str(t)[:40]!r}", n) from None
        r = rec.get("overall")
        try:
            r = float(r) if r is not None else math.nan
        except (TypeError, ValueError):
            raise DataFileError(path, f"non-numeric rating 'overall' {str(r)[:40]!r}", n) \
                from None
        rating.append(r)
        lines.append(n)
    return users, items, np.asarray(ts, dtype=np.int64), np.asarray(rating), \
        np.asarray(lines, dtype=np.int64)


def clean_title(title: Any) -> str:
    """HTML entities decoded, whitespace collapsed: the meta titles are scraped web text."""
    return " ".join(html.unescape(str(title)).split())


def read_meta(path: Path, wanted: set[str], progress: bool = False) -> dict[str, str]:
    """Titles of the asins in ``wanted`` (the meta files are far larger than one needs)."""
    titles: dict[str, str] = {}
    for n, raw in _lines(path, progress):
        rec = _record(path, n, raw)
        asin = str(_field(path, n, rec, "asin"))
        if asin in wanted and asin not in titles:
            title = clean_title(rec.get("title") or "")
            if title:
                titles[asin] = title
    return titles


def read_amazon(files: dict[str, Path], progress: bool = False) -> Interactions:
    users, items, ts, rating, lines = read_reviews(files["ratings"], progress)
    if not users:
        raise DataFileError(files["ratings"], "no reviews in file")
    titles = read_meta(files["titles"], set(items), progress)
    if not titles:
        raise DataFileError(files["titles"], "no titles for any reviewed asin (wrong category's "
                                             "meta file?)")
    return make_interactions(files["ratings"], users, items, ts, rating, lines, titles,
                             on_duplicate="drop")
