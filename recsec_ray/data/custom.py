"""A user's own data: interactions (user,item,timestamp[,rating]) + titles (item,title).

Each may be CSV (UTF-8, comma-separated, header row naming the columns) or Parquet (chosen by
the ``.parquet``/``.pq`` suffix). Ids may be any strings; timestamps are unix seconds (integer
or decimal) or ISO-8601 dates (naive dates read as UTC). For Parquet, the "line" in an error message is the
1-based row number.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..errors import DataFileError
from .raw import Interactions, make_interactions
from .textio import decode, guess_separator, read_bytes

INTERACTION_COLUMNS = ("user", "item", "timestamp")
TITLE_COLUMNS = ("item", "title")


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _csv_columns(path: Path, wanted: tuple[str, ...], optional: tuple[str, ...] = ()
                 ) -> tuple[dict[str, list[str]], list[int]]:
    text = decode(path, read_bytes(path), "utf-8")
    text = text.removeprefix("\ufeff")  # spreadsheet exports start with a BOM
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except (StopIteration, csv.Error) as err:
        raise DataFileError(path, f"no header row ({err})", 1) from None
    missing = [c for c in wanted if c not in header]
    if missing:
        hint = guess_separator(",".join(header), ",") if len(header) == 1 else ""
        raise DataFileError(path, f"missing column(s) {', '.join(missing)} in header "
                                  f"{header!r}{hint}; expected {','.join(wanted)}", 1)
    idx = {c: header.index(c) for c in wanted + optional if c in header}
    cols: dict[str, list[str]] = {c: [] for c in idx}
    lines: list[int] = []
    need = max(idx.values()) + 1
    try:
        for row in reader:
            if not row or not any(f.strip() for f in row):
                continue
            if len(row) < need:
                raise DataFileError(path, f"expected {len(header)} fields, found {len(row)}",
                                    reader.line_num)
            for c, j in idx.items():
                cols[c].append(row[j])
            lines.append(reader.line_num)
    except csv.Error as err:
        raise DataFileError(path, f"bad CSV ({err})", reader.line_num) from None
    if not lines:
        raise DataFileError(path, "no data rows after the header", 2)
    return cols, lines


def _parquet_columns(path: Path, wanted: tuple[str, ...], optional: tuple[str, ...] = ()
                     ) -> tuple[dict[str, list], list[int]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DataFileError(path, "file not found") from None
    except (pa.ArrowException, OSError) as err:
        raise DataFileError(path, f"not a readable Parquet file ({str(err).splitlines()[0]})") \
            from None
    names = [n.lower() for n in table.column_names]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataFileError(path, f"missing column(s) {', '.join(missing)}; found "
                                  f"{table.column_names}")
    if table.num_rows == 0:
        raise DataFileError(path, "no rows")
    cols = {}
    for c in wanted + optional:
        if c in names:
            col = table.column(names.index(c))
            if col.null_count:
                row = int(np.argmax(np.asarray(col.is_null())))
                raise DataFileError(path, f"empty {c!r} (row {row + 1})", row + 1)
            if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
                # whole seconds: sub-second parts are dropped, not an error
                col = col.cast(pa.timestamp("s"), safe=False).cast(pa.int64())
            cols[c] = col.to_pylist()
    return cols, list(range(1, table.num_rows + 1))


def _timestamps(path: Path, values: list, lines: list[int]) -> np.ndarray:
    try:
        return np.asarray(values, dtype=str).astype(np.int64)
    except (ValueError, OverflowError):
        pass
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        s = str(v).strip()
        try:
            f: float | None = float(s)
        except ValueError:
            f = None
        if f is not None:
            if not (np.isfinite(f) and -2**62 < f < 2**62):
                raise DataFileError(path, f"timestamp {s[:40]!r} is out of range", lines[i])
            out[i] = int(f)
            continue
        try:
            d = datetime.fromisoformat(s)
        except ValueError:
            raise DataFileError(path, f"timestamp {s[:40]!r} is neither a number nor an "
                                      "ISO-8601 date", lines[i]) from None
        if d.tzinfo is None:
            d = d.replace(tzinfo=UTC)
        out[i] = int(d.timestamp())
    return out


def _ratings(path: Path, values: list, lines: list[int]) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        try:
            out[i] = float(v) if v not in ("", None) else np.nan
        except (TypeError, ValueError):
            raise DataFileError(path, f"non-numeric rating {str(v)[:40]!r}", lines[i]) from None
    return out


def read_titles(path: Path) -> dict[str, str]:
    read = _parquet_columns if _is_parquet(path) else _csv_columns
    cols, lines = read(path, TITLE_COLUMNS)
    titles: dict[str, str] = {}
    for item, title, line in zip(cols["item"], cols["title"], lines):
        key = str(item).strip()
        if key in titles:
            raise DataFileError(path, f"duplicate item {key!r}", line)
        titles[key] = " ".join(str(title or "").split())
    return titles


def read_custom(files: dict[str, Path]) -> Interactions:
    path = files["ratings"]
    read = _parquet_columns if _is_parquet(path) else _csv_columns
    cols, lines = read(path, INTERACTION_COLUMNS, ("rating",))
    for c in ("user", "item"):
        for i, v in enumerate(cols[c]):
            if not str(v).strip():
                raise DataFileError(path, f"empty {c} id", lines[i])
    ts = _timestamps(path, cols["timestamp"], lines)
    rating = _ratings(path, cols["rating"], lines) if "rating" in cols else None
    users = [str(v).strip() for v in cols["user"]]
    items = [str(v).strip() for v in cols["item"]]
    titles = read_titles(files["titles"])
    return make_interactions(path, users, items, ts, rating, np.asarray(lines, dtype=np.int64),
                             titles, on_duplicate="drop")
