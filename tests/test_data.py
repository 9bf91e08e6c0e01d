"""Datasets: readers of the original formats, preprocessing, cache, download, synthetic data.

Fixtures in tests/data/ are tiny hand-written files in each original format holding the same
logical data: users 1-8 rate 6 of items 10..80 each (chronological), ties planted for users 2
and 3 (listed in the file in reverse item order), rare items 90/100 and small users 9/10 that
5-core filtering removes. No test touches the network: fetch_url is replaced in every test.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import csv as pacsv

import recsec_ray.data as rdata
from recsec_ray.config import DataConfig
from recsec_ray.data import cache, dataset_stats, files, load_dataset, synthetic
from recsec_ray.data.preprocessing import k_core
from recsec_ray.errors import ConfigError, DataFileError

FIXTURES = Path(__file__).parent / "data"
KW = {"ml-100k": {}, "ml-1m": {}, "amazon": {"category": "Toys"},
      "custom": {"interactions": "interactions.csv", "titles": "titles.csv"}}
# expected sequences (item indices 1..8 = ids 10..80) for users 1..3 under each tie rule
FILE_ORDER = [[1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 7, 6], [4, 3, 5, 6, 7, 8]]
ITEM_ORDER = [[1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7], [3, 4, 5, 6, 7, 8]]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Own cache dir per test; any network attempt fails the test."""
    monkeypatch.setenv("RECSEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RECSEC_OFFLINE", raising=False)
    monkeypatch.delenv("RECSEC_DATA_DIR", raising=False)

    def no_network(url, dest, progress=False):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(files, "fetch_url", no_network)


def copy_fixture(tmp_path: Path, *names: str) -> Path:
    root = tmp_path / "data"
    for name in names:
        shutil.copytree(FIXTURES / name, root / name)
    return root


def cfg_for(name: str, root: Path, **kw) -> DataConfig:
    return DataConfig(name=name, data_dir=str(root), **{**KW[name], **kw})


def seqs(data) -> list[list[int]]:
    return [s.tolist() for s in data.seqs]


# ---- readers + preprocessing ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["ml-100k", "ml-1m", "amazon", "custom"])
def test_every_format_gives_the_same_sequences(tmp_path, name):
    data = load_dataset(cfg_for(name, copy_fixture(tmp_path, name)))
    assert data.n_users == 8 and data.n_items == 8  # users 9, 10 and items 90, 100 are cut
    assert seqs(data)[:3] == FILE_ORDER
    assert all(s.dtype == np.int64 for s in data.seqs)
    assert data.titles[0] == "" and data.item_ids[0] == ""
    assert data.titles[3] == "Café Noir (1993)"  # latin-1 byte 0xE9 in the MovieLens files
    assert data.item_ids[1].endswith("10") and data.item_ids[8].endswith("80")
    stats = dataset_stats(data)
    assert stats["interactions"] == 48 and stats["density"] == pytest.approx(0.75)
    assert stats["tie_share"] == pytest.approx(1 / 8)  # user 2's last two items tie


def test_tie_rules_order_tied_items_differently(tmp_path):
    root = copy_fixture(tmp_path, "ml-100k")
    assert seqs(load_dataset(cfg_for("ml-100k", root, tie_rule="file")))[:3] == FILE_ORDER
    assert seqs(load_dataset(cfg_for("ml-100k", root, tie_rule="item")))[:3] == ITEM_ORDER
    orders = set()
    for seed in range(12):
        a = seqs(load_dataset(cfg_for("ml-100k", root, tie_rule="random", seed=seed)))
        assert a == seqs(load_dataset(cfg_for("ml-100k", root, tie_rule="random", seed=seed)))
        orders.add(tuple(a[1]))
        assert a[0] == FILE_ORDER[0]  # untied users never move
    assert orders == {tuple(FILE_ORDER[1]), tuple(ITEM_ORDER[1])}


def test_k_core_is_iterative():
    # k=2: user C (item 3 only) goes, then item 3, then user B, then item 2 would cascade,
    # but users A and D hold items 1, 2 twice each, so exactly their rows survive
    user = np.array([0, 0, 1, 1, 2, 3, 3])  # A A B B C D D
    item = np.array([1, 2, 2, 3, 3, 1, 2])
    assert k_core(user, item, 2).tolist() == [True, True, False, False, False, True, True]
    assert k_core(user[:5], item[:5], 2).tolist() == [False] * 5  # without D: all cascade away
    assert k_core(user, item, 1).all()


def test_k_core_min_rating_and_max_len(tmp_path):
    root = copy_fixture(tmp_path, "ml-100k")
    data = load_dataset(cfg_for("ml-100k", root, k_core=1, max_len=3))
    by_user = dict(zip(data.user_ids, seqs(data)))
    assert data.n_items == 10 and "10" not in by_user  # user 10 has 2 items (< 3): dropped
    assert by_user["1"] == [2, 3, 4, 5, 6, 9]  # last max_len + 3 = 6 of 7 items
    assert by_user["9"] == [1, 2, 3]
    low = load_dataset(cfg_for("ml-100k", root, min_rating=3.0))
    assert dict(zip(low.user_ids, seqs(low)))["4"] == [5, 6, 7, 8, 1]  # item 40 rated 1
    with pytest.raises(ConfigError, match="data.k_core"):
        load_dataset(cfg_for("ml-100k", root, k_core=50))


def test_custom_parquet_and_iso_dates(tmp_path):
    root = copy_fixture(tmp_path, "custom")
    table = pacsv.read_csv(root / "custom" / "interactions.csv")
    # milliseconds with a sub-second part: read as whole seconds, never an Arrow error
    ts = pa.array(table.column("timestamp").to_numpy() * 1000 + 250, pa.timestamp("ms"))
    table = table.set_column(table.column_names.index("timestamp"), "timestamp", ts)
    pq.write_table(table, root / "custom" / "inter.parquet")
    pq.write_table(pacsv.read_csv(root / "custom" / "titles.csv"), root / "custom" / "t.pq")
    data = load_dataset(cfg_for("custom", root, interactions="inter.parquet", titles="t.pq"))
    assert seqs(data)[:3] == FILE_ORDER
    assert data.titles[6] == 'Fox and Hound Redux (1996), the "cut"'
    iso = root / "custom" / "iso.csv"
    iso.write_text("user,item,timestamp\n" + "".join(
        f"u{u},m{i}0,2020-01-0{d}T10:00:00\n" for u in (1, 2, 3) for i, d in ((1, 3), (2, 1),
                                                                               (3, 2))))
    data = load_dataset(cfg_for("custom", root, interactions=str(iso), k_core=1))
    assert data.n_users == 3 and data.titles[1] == "Alpha Story (1990)"
    assert [data.item_ids[i] for i in data.seqs[0]] == ["m20", "m30", "m10"]


def test_amazon_titles_literal_lines_and_untitled_items(tmp_path, caplog):
    root = copy_fixture(tmp_path, "amazon")
    data = load_dataset(cfg_for("amazon", root))
    assert data.titles[2] == "Blue Harbor (1991)"  # python-literal meta line
    assert data.titles[6] == "Fox & Hound Redux (1996)"  # HTML entity decoded
    meta = root / "amazon" / "meta_Toys.json.gz"
    lines = gzip.decompress(meta.read_bytes()).decode().splitlines()
    meta.write_bytes(gzip.compress("\n".join(ln for ln in lines if "B0030" not in ln).encode()))
    with caplog.at_level(logging.WARNING):
        data = load_dataset(cfg_for("amazon", root, k_core=1))
    assert "B0030" not in data.item_ids and "without a title" in caplog.text


def test_duplicate_rows_in_logs_are_dropped_with_a_count(tmp_path, caplog):
    root = copy_fixture(tmp_path, "custom")
    shutil.copy(FIXTURES / "bad" / "custom_duplicate_rows" / "interactions.csv",
                root / "custom" / "interactions.csv")
    with caplog.at_level(logging.WARNING):
        data = load_dataset(cfg_for("custom", root))
    assert "dropped 1 repeated (user, item) rows" in caplog.text
    assert seqs(data)[:3] == FILE_ORDER


def test_utf8_resaved_movielens_titles_are_detected(tmp_path, caplog):
    root = copy_fixture(tmp_path, "ml-100k")
    item = root / "ml-100k" / "u.item"
    item.write_bytes(item.read_bytes().decode("latin-1").encode("utf-8"))
    with caplog.at_level(logging.WARNING):
        data = load_dataset(cfg_for("ml-100k", root))
    assert data.titles[3] == "Café Noir (1993)" and "is UTF-8" in caplog.text


# ---- cache -----------------------------------------------------------------------------------
def entries(tmp_path: Path) -> list[str]:
    d = files.cache_root()  # under the test's own RECSEC_CACHE_DIR
    return sorted(p.name for p in d.iterdir() if p.name != "file_hashes.json") \
        if d.exists() else []


def test_cache_hit_and_keys(tmp_path, monkeypatch):
    root = copy_fixture(tmp_path, "ml-100k")
    calls = []
    real = rdata.preprocess
    monkeypatch.setattr(rdata, "preprocess", lambda *a: calls.append(1) or real(*a))
    first = load_dataset(cfg_for("ml-100k", root))
    second = load_dataset(cfg_for("ml-100k", root))
    assert len(calls) == 1 and seqs(first) == seqs(second)
    assert first.titles == second.titles and first.user_ids == second.user_ids
    assert dataset_stats(second) == dataset_stats(first)  # tie share survives the cache
    load_dataset(cfg_for("ml-100k", root, k_core=3))
    load_dataset(cfg_for("ml-100k", root, tie_rule="item"))
    assert len(calls) == 3 and len(entries(tmp_path)) == 3
    with open(root / "ml-100k" / "u.data", "a") as fh:  # changed source => new key
        fh.write("8\t100\t5\t200000\n")
    load_dataset(cfg_for("ml-100k", root))
    assert len(calls) == 4 and len(entries(tmp_path)) == 4


def test_cache_failure_leaves_nothing(tmp_path, monkeypatch, caplog):
    root = copy_fixture(tmp_path, "ml-100k")
    real_write = pq.write_table
    written = []

    def write_then_fail(table, where, **kw):
        real_write(table, where, **kw)
        written.append(where)
        if len(written) == 1:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.pq, "write_table", write_then_fail)
    with caplog.at_level(logging.WARNING):
        data = load_dataset(cfg_for("ml-100k", root))  # still returns the data
    assert data.n_users == 8 and "could not write the cache" in caplog.text
    assert written and entries(tmp_path) == []  # no entry, no temporary folder
    monkeypatch.setattr(cache.pq, "write_table", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        load_dataset(cfg_for("ml-100k", root))
    assert entries(tmp_path) == []


def test_corrupt_cache_entry_is_rebuilt(tmp_path, caplog):
    root = copy_fixture(tmp_path, "ml-1m")
    first = load_dataset(cfg_for("ml-1m", root))
    (entry,) = entries(tmp_path)
    users = files.cache_root() / entry / "users.parquet"
    users.write_bytes(users.read_bytes()[:50])
    with caplog.at_level(logging.WARNING):
        again = load_dataset(cfg_for("ml-1m", root))
    assert seqs(again) == seqs(first) and "unreadable" in caplog.text


# ---- locating and downloading ----------------------------------------------------------------
def test_offline_missing_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSEC_OFFLINE", "1")
    with pytest.raises(DataFileError) as err:
        load_dataset(DataConfig(name="ml-100k", data_dir=str(tmp_path / "none")))
    msg = str(err.value)
    assert "\n" not in msg and "u.data" in msg and str(tmp_path / "none" / "ml-100k") in msg
    assert "offline" in msg and "files.grouplens.org" in msg


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    import urllib.error

    def refuse(url, dest, progress=False):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(files, "fetch_url", refuse)
    with pytest.raises(DataFileError, match="download failed: Name or service") as err:
        load_dataset(DataConfig(name="amazon", category="Toys", data_dir=str(tmp_path)))
    assert "\n" not in str(err.value) and "Toys.json.gz" in str(err.value)
    assert not any(p.name.startswith(".download") for p in (tmp_path / "amazon").iterdir())


def _fake_zip(dataset: str, members: dict[str, bytes]):
    def fetch(url, dest, progress=False):
        assert url.endswith(f"{dataset}.zip")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, blob in members.items():
                zf.writestr(f"{dataset}/{name}", blob)
        Path(dest).write_bytes(buf.getvalue())
    return fetch


def test_download_verifies_published_checksums(tmp_path, monkeypatch):
    blobs = {n: (FIXTURES / "ml-100k" / n).read_bytes() for n in ("u.data", "u.item")}
    monkeypatch.setattr(files, "fetch_url", _fake_zip("ml-100k", blobs))
    # the fixture is not the GroupLens release: its hash must be refused, nothing installed
    with pytest.raises(DataFileError, match="is not the expected"):
        load_dataset(DataConfig(name="ml-100k", data_dir=str(tmp_path)))
    assert sorted(os.listdir(tmp_path / "ml-100k")) == []
    for n, blob in blobs.items():  # pretend the fixture is the release
        monkeypatch.setitem(files.PUBLISHED_SHA256, ("ml-100k", n),
                            __import__("hashlib").sha256(blob).hexdigest())
    data = load_dataset(DataConfig(name="ml-100k", data_dir=str(tmp_path)))
    assert seqs(data)[:3] == FILE_ORDER
    assert sorted(os.listdir(tmp_path / "ml-100k")) == ["u.data", "u.item"]


def test_download_without_published_hash_is_recorded_then_verified(tmp_path, monkeypatch):
    src = FIXTURES / "amazon"

    def fetch(url, dest, progress=False):
        Path(dest).write_bytes((src / Path(url).name).read_bytes())

    monkeypatch.setattr(files, "fetch_url", fetch)
    cfg = DataConfig(name="amazon", category="Toys", data_dir=str(tmp_path))
    assert seqs(load_dataset(cfg))[:3] == FILE_ORDER
    sums = files.recorded_sums(tmp_path / "amazon")
    assert set(sums) == {"Toys.json.gz", "meta_Toys.json.gz"}
    reviews = tmp_path / "amazon" / "Toys.json.gz"
    reviews.write_bytes(gzip.compress(gzip.decompress(reviews.read_bytes()) + b"\n"))
    with pytest.raises(DataFileError, match="recorded in SHA256SUMS"):
        load_dataset(cfg)
    reviews.unlink()  # re-download must match the recorded hash too
    monkeypatch.setattr(files, "fetch_url", lambda url, dest, progress=False:
                        Path(dest).write_bytes(b"\x1f\x8b tampered"))
    with pytest.raises(DataFileError, match="is not the expected"):
        load_dataset(cfg)
    assert not reviews.exists()


def test_ml1m_prefers_full_ratings_and_flags_partial(tmp_path, caplog):
    root = copy_fixture(tmp_path, "ml-1m")
    ratings = root / "ml-1m" / "ratings.dat"
    (root / "ml-1m" / "ratings_users1-2999.dat.gz").write_bytes(
        gzip.compress(ratings.read_bytes()))
    assert "note" not in dataset_stats(load_dataset(cfg_for("ml-1m", root)))
    ratings.unlink()
    with caplog.at_level(logging.WARNING):
        data = load_dataset(cfg_for("ml-1m", root))
    assert "PARTIAL ML-1M" in caplog.text and "users 1-2999" in dataset_stats(data)["note"]


def test_bad_category_and_custom_paths(tmp_path):
    with pytest.raises(ConfigError, match="data.category"):
        load_dataset(DataConfig(name="amazon", category="../etc", data_dir=str(tmp_path)))
    with pytest.raises(DataFileError, match="from data.interactions"):
        load_dataset(DataConfig(name="custom", interactions="nope.csv", titles="t.csv",
                                data_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="data.seed"):
        DataConfig(seed=-1)


# ---- synthetic -------------------------------------------------------------------------------
def test_synthetic_shape_determinism_and_structure():
    a, b = synthetic(300, 150, seed=3), synthetic(300, 150, seed=3)
    assert seqs(a) == seqs(b) and a.titles == b.titles
    assert seqs(a) != seqs(synthetic(300, 150, seed=4))
    assert a.n_users == 300 and a.n_items == 150 and a.titles[0] == ""
    assert len(set(a.titles[1:])) == 150 and all(a.titles[1:])
    lens = np.array([len(s) for s in a.seqs])
    assert lens.min() >= 5 and lens.max() <= 53
    assert all(len(set(s.tolist())) == len(s) and s.min() >= 1 and s.max() <= 150
               for s in a.seqs)
    counts = np.sort(a.item_counts("all"))[::-1]
    assert counts[:15].sum() > 0.2 * counts.sum()  # power-law head: 10% of items, >20% of use
    # sequential structure: "most frequent successor" beats "most popular" on test targets
    succ = np.zeros((151, 151))
    for s in a.seqs:
        np.add.at(succ, (s[:-2][:-1], s[:-2][1:]), 1)
    pop = a.item_counts("train")
    hit_succ = np.mean([succ[s[-2]].argmax() == s[-1] for s in a.seqs])
    hit_pop = np.mean([pop.argmax() == s[-1] for s in a.seqs])
    assert hit_succ > hit_pop + 0.2
    cfg = DataConfig(name="synthetic", synthetic_users=40, synthetic_items=30, seed=1,
                     max_len=10)
    data = load_dataset(cfg)
    assert data.n_users == 40 and data.n_items == 30 and max(map(len, data.seqs)) <= 13


# ---- real data (skipped unless RECSEC_DATA_DIR is set, as in CI) -----------------------------
REAL = os.environ.get("RECSEC_DATA_DIR")
real = pytest.mark.skipif(not REAL or not Path(REAL, "ml-100k", "u.data").is_file(),
                          reason="RECSEC_DATA_DIR with ml-100k not set")


@real
def test_ml100k_real_shapes():
    full = load_dataset(DataConfig(name="ml-100k", data_dir=REAL, k_core=1, max_len=1000))
    s = dataset_stats(full)
    assert (s["users"], s["items"], s["interactions"]) == (943, 1682, 100000)
    assert full.meta["tie_users"] == 415  # DESIGN §3: last two items tie for 415 of 943 users
    core = dataset_stats(load_dataset(DataConfig(name="ml-100k", data_dir=REAL, max_len=1000)))
    assert (core["users"], core["items"], core["interactions"]) == (943, 1349, 99287)
    default = load_dataset(DataConfig(name="ml-100k", data_dir=REAL))
    d = dataset_stats(default)
    assert (d["users"], d["items"], d["interactions"], d["len_max"]) == (943, 1336, 41548, 53)
    assert "Toy Story (1995)" in default.titles
    assert any("é" in t for t in default.titles)  # latin-1 decoded


@real
def test_ml1m_partial_real(caplog):
    with caplog.at_level(logging.WARNING):
        data = load_dataset(DataConfig(name="ml-1m", data_dir=REAL))
    s = dataset_stats(data)
    assert "PARTIAL ML-1M" in caplog.text and "users 1-2999" in s["note"]
    assert s["users"] == 2999 and s["len_max"] == 53 and 3000 < s["items"] <= 3615
    assert json.dumps(data.meta)  # meta stays JSON-friendly for run params


def test_added_users_keep_ids_aligned_or_absent():
    """A defense's view has no ids; users it simulates must not give it a misaligned list."""
    from recsec_ray.data.sequences import SequenceData

    named = SequenceData("t", [np.array([1, 2, 3])], ["", "a", "b", "c"], user_ids=["u1"])
    assert named.with_users([np.array([2, 3, 1])]).user_ids == ["u1", "fake-0"]
    blind = SequenceData("t", [np.array([1, 2, 3])], ["", "a", "b", "c"])
    assert blind.with_users([np.array([2, 3, 1])]).user_ids == []
