"""Datasets by name: where each one's files are, and which reader parses them."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import DataConfig
from ..errors import ConfigError, DataFileError
from .amazon import URL_META, URL_REVIEWS, read_amazon
from .custom import read_custom
from .files import Remote, ensure_files
from .movielens import ML1M_PARTIAL, ML1M_PARTIAL_NOTE, read_ml1m, read_ml100k
from .raw import Interactions

log = logging.getLogger(__name__)

ML100K = Remote("https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                {"u.data": "ml-100k/u.data", "u.item": "ml-100k/u.item"})
ML1M = Remote("https://files.grouplens.org/datasets/movielens/ml-1m.zip",
              {"ratings.dat": "ml-1m/ratings.dat", "movies.dat": "ml-1m/movies.dat"})


@dataclass(frozen=True)
class Dataset:
    """``locate`` finds (or downloads) the files by role ("ratings", "titles"); ``read``
    parses them; ``note`` says what a user must know about this copy (e.g. it is partial)."""

    name: str
    about: str
    locate: Callable[[DataConfig, Path, bool], dict[str, Path]]
    read: Callable[[dict[str, Path], bool], Interactions]
    note: Callable[[dict[str, Path]], str | None] = lambda files: None


def _ml100k(cfg: DataConfig, root: Path, progress: bool) -> dict[str, Path]:
    p = ensure_files("ml-100k", root / "ml-100k", ["u.data", "u.item"], ML100K,
                     progress=progress)
    return {"ratings": p["u.data"], "titles": p["u.item"]}


def _ml1m(cfg: DataConfig, root: Path, progress: bool) -> dict[str, Path]:
    folder = root / "ml-1m"
    full, partial = folder / "ratings.dat", folder / ML1M_PARTIAL
    need = ["movies.dat"] + ([] if full.is_file() or partial.is_file() else ["ratings.dat"])
    p = ensure_files("ml-1m", folder, need, ML1M, progress=progress)
    ratings = full if full.is_file() else partial
    return {"ratings": ratings, "titles": p["movies.dat"]}


def _ml1m_note(files: dict[str, Path]) -> str | None:
    return ML1M_PARTIAL_NOTE if files["ratings"].name == ML1M_PARTIAL else None


def _amazon(cfg: DataConfig, root: Path, progress: bool) -> dict[str, Path]:
    cat = cfg.category or ""
    if not re.fullmatch(r"[A-Za-z0-9_]+", cat):
        raise ConfigError(f"data.category: {cat!r} is not an Amazon 2018 category file name "
                          "(letters, digits, '_', e.g. 'All_Beauty', 'Toys_and_Games')")
    folder = root / "amazon"
    out = {}
    for role, name, url in (("ratings", f"{cat}.json.gz", URL_REVIEWS.format(cat)),
                            ("titles", f"meta_{cat}.json.gz", URL_META.format(cat))):
        plain = folder / name.removesuffix(".gz")
        if plain.is_file() and not (folder / name).is_file():  # accept an unzipped copy
            out[role] = plain
        else:
            out[role] = ensure_files("amazon", folder, [name], Remote(url),
                                     progress=progress)[name]
    return out


def _custom_path(given: str | None, root: Path, field: str) -> Path:
    path = Path(given or "").expanduser()
    for cand in (path, root / "custom" / path):
        if cand.is_file():
            return cand
    raise DataFileError(path, f"file not found (from {field}; looked here and in "
                              f"{root / 'custom'}/)")


def _custom(cfg: DataConfig, root: Path, progress: bool) -> dict[str, Path]:
    return {"ratings": _custom_path(cfg.interactions, root, "data.interactions"),
            "titles": _custom_path(cfg.titles, root, "data.titles")}


DATASETS: dict[str, Dataset] = {
    "ml-100k": Dataset("ml-100k", "MovieLens 100K (GroupLens): u.data + u.item", _ml100k,
                       lambda files, progress: read_ml100k(files)),
    "ml-1m": Dataset("ml-1m", "MovieLens 1M (GroupLens): ratings.dat + movies.dat", _ml1m,
                     lambda files, progress: read_ml1m(files), _ml1m_note),
    "amazon": Dataset("amazon", "Amazon Reviews 2018, one category: <Category>.json.gz + "
                                "meta_<Category>.json.gz", _amazon, read_amazon),
    "custom": Dataset("custom", "your own interactions (user,item,timestamp[,rating]) + titles "
                                "(item,title), CSV or Parquet", _custom,
                      lambda files, progress: read_custom(files)),
}
