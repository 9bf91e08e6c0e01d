"""Bad-input corpus for dataset files (tests/data/bad/<case>/): each malformed file must stop
the load with ONE line ``file:line: problem`` and leave nothing in the cache.

Each case folder holds replacement file(s) for the good fixture of its dataset (the prefix of
the case name). The table gives the expected problem text and line (None: no line applies).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from recsec_ray.config import DataConfig
from recsec_ray.data import files, load_dataset
from recsec_ray.errors import DataFileError

FIXTURES = Path(__file__).parent / "data"
DATASET = {"ml100k": "ml-100k", "ml1m": "ml-1m", "amazon": "amazon", "custom": "custom"}

CASES = {  # case: (file, expected problem substring, line)
    "ml100k_comma_sep": ("u.data", "found 1 (looks ','-separated)", 1),
    "ml100k_non_numeric_user": ("u.data", "non-numeric user id 'abc'", 3),
    "ml100k_empty": ("u.data", "empty file", 1),
    "ml100k_missing_column": ("u.data", "expected 4 '\\t'-separated fields", 2),
    "ml100k_negative_ts": ("u.data", "negative timestamp -5", 4),
    "ml100k_huge_ts": ("u.data", "timestamp '99999999999999999999' out of range", 4),
    "ml100k_duplicate": ("u.data", "duplicate row for user 10 item 10 (also at line 2)", 5),
    "ml100k_rating_text": ("u.data", "non-numeric rating 'five'", 6),
    "ml100k_timestamp_text": ("u.data", "non-numeric timestamp '10818O'", 7),
    "ml100k_zip": ("u.data", "is a zip archive", 1),
    "ml100k_item_tab_sep": ("u.item", "found 1 (looks '\\t'-separated)", 1),
    "ml100k_item_non_numeric_id": ("u.item", "non-numeric item id 'x20'", 2),
    "ml100k_item_binary": ("u.item", "binary data (NUL byte)", 1),
    "ml1m_truncated_gzip": ("ratings_users1-2999.dat.gz", "truncated gzip file", 22),
    "ml1m_not_gzip": ("ratings_users1-2999.dat.gz", "named .gz but not a gzip file", 1),
    "ml1m_single_colon": ("ratings.dat", "found 1 (looks ':'-separated)", 1),
    "ml1m_movies_missing_title": ("movies.dat", "expected 3 '::'-separated fields", 3),
    "amazon_bad_json": ("Toys.json.gz", "not a JSON object", 2),
    "amazon_missing_field": ("Toys.json.gz", "missing field 'reviewerID'", 3),
    "amazon_bad_time": ("Toys.json.gz", "non-numeric unixReviewTime 'yesterday'", 5),
    "amazon_not_utf8": ("Toys.json.gz", "not valid UTF-8", 2),
    "amazon_not_object": ("Toys.json.gz", "expected a JSON object, found list", 4),
    "amazon_meta_truncated": ("meta_Toys.json.gz", "truncated gzip file", 11),
    "custom_missing_column": ("interactions.csv", "missing column(s) timestamp", 1),
    "custom_semicolon": ("interactions.csv", "(looks ';'-separated)", 1),
    "custom_header_only": ("interactions.csv", "no data rows", 2),
    "custom_bad_timestamp": ("interactions.csv", "neither a number nor an ISO-8601 date", 5),
    "custom_negative_timestamp": ("interactions.csv", "negative timestamp -120000", 6),
    "custom_huge_timestamp": ("interactions.csv", "'99999999999999999999' is out of range", 5),
    "custom_empty_user": ("interactions.csv", "empty user id", 7),
    "custom_bad_rating": ("interactions.csv", "non-numeric rating 'great'", 8),
    "custom_short_row": ("interactions.csv", "expected 4 fields, found 2", 9),
    "custom_bad_parquet": ("interactions.parquet", "not a readable Parquet file", None),
    "custom_titles_latin1": ("titles.csv", "not valid UTF-8 text (byte 0xe9)", 4),
    "custom_titles_duplicate": ("titles.csv", "duplicate item 'm20'", 12),
    "custom_titles_missing_column": ("titles.csv", "missing column(s) title", 1),
}
RECOVERIES = {"custom_duplicate_rows"}  # logged and repaired, tested in test_data.py


def test_corpus_and_table_agree():
    on_disk = {p.name for p in (FIXTURES / "bad").iterdir()}
    assert on_disk == set(CASES) | RECOVERIES
    assert len(CASES) >= 12


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_is_one_line_naming_file_and_line(case, tmp_path, monkeypatch):
    monkeypatch.setenv("RECSEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(files, "fetch_url", lambda *a, **k: pytest.fail("network"))
    name = DATASET[case.split("_")[0]]
    folder = tmp_path / "data" / name
    shutil.copytree(FIXTURES / name, folder)
    for f in (FIXTURES / "bad" / case).iterdir():
        shutil.copy(f, folder / f.name)
        if f.name.startswith("ratings_users"):  # the partial file is read only without the full
            (folder / "ratings.dat").unlink()
    fname, problem, line = CASES[case]
    kw = {"amazon": {"category": "Toys"},
          "custom": {"titles": "titles.csv", "interactions": "interactions.parquet"
                     if fname.endswith(".parquet") else "interactions.csv"}}.get(name, {})
    with pytest.raises(DataFileError) as err:
        load_dataset(DataConfig(name=name, data_dir=str(tmp_path / "data"), **kw))
    msg = str(err.value)
    assert "\n" not in msg
    where = f"{folder / fname}:{line}: " if line is not None else f"{folder / fname}: "
    assert msg.startswith(where), msg
    assert problem in msg, msg
    assert err.value.__cause__ is None or isinstance(err.value.__cause__, DataFileError)
    cache = tmp_path / "cache"
    left = [p.name for p in cache.iterdir()] if cache.exists() else []
    assert [p for p in left if p != "file_hashes.json"] == []
