"""Where raw files live, fetching them when missing, and their sha256 checksums.

Folders: ``cfg.data_dir`` or ``$RECSEC_DATA_DIR`` or ``~/.cache/recsec_ray/data``, one
subfolder per dataset (``ml-100k/``, ``ml-1m/``, ``amazon/``).

Checksums. GroupLens publishes no checksums for the files inside its zips, so the MovieLens
hashes below are those of the original release members as recorded in the shared data README;
a downloaded member must match them exactly, and a local copy that differs only draws a
warning (an edited copy, e.g. CRLF or re-indexed, still loads but is not the release). Where
no trusted hash exists (Amazon 2018 files, the full ML-1M ``ratings.dat``) the hash is
recorded on first download in ``<folder>/SHA256SUMS`` (trust on first use) and every later
load verifies the file against it, so silent corruption or a swapped file is caught.

Network: the only call is :func:`fetch_url` (tests replace it). ``RECSEC_OFFLINE=1`` skips
any attempt; offline, a missing file fails with one line naming it and the folder to put it in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from ..errors import DataFileError

log = logging.getLogger(__name__)

DATA_ENV, OFFLINE_ENV = "RECSEC_DATA_DIR", "RECSEC_OFFLINE"
SUMS_FILE = "SHA256SUMS"
_warned: set = set()  # (path, digest) already warned about, to say it once per process

# sha256 of the original GroupLens release members (shared/data/README.md)
PUBLISHED_SHA256 = {
    ("ml-100k", "u.data"): "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    ("ml-100k", "u.item"): "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    ("ml-1m", "movies.dat"): "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
    ("ml-1m", "ratings_users1-2999.dat.gz"):
        "2fedcf5405373a49df4041e3d3fe1e8db9eacf2c77c209ae1f686ea06b7a16d9",
}


@dataclass(frozen=True)
class Remote:
    """Where a dataset's files come from: one URL per file, or one zip holding several."""

    url: str
    members: dict[str, str] = field(default_factory=dict)  # file name -> member in the zip


def data_root(data_dir: str | None = None) -> Path:
    root = data_dir or os.environ.get(DATA_ENV) or "~/.cache/recsec_ray/data"
    return Path(root).expanduser()


def cache_root() -> Path:
    return paths.cache_root() / "cache"


# ---- checksums -----------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256, memoised by (path, size, mtime) so big Amazon files are hashed once."""
    st = path.stat()
    memo_path = cache_root() / "file_hashes.json"
    key = str(path.resolve())
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    hit = memo.get(key)
    if hit and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
        return hit["sha256"]
    digest = sha256_file(path)
    if st.st_size > (8 << 20):  # small files hash faster than the memo round trip
        memo[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        try:
            atomic_write_text(memo_path, json.dumps(memo))
        except OSError:
            pass
    return digest


def recorded_sums(folder: Path) -> dict[str, str]:
    try:
        text = (folder / SUMS_FILE).read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[1].lstrip("*")] = parts[0]
    return out


def _record_sum(folder: Path, name: str, digest: str) -> None:
    sums = recorded_sums(folder)
    sums[name] = digest
    atomic_write_text(folder / SUMS_FILE, "".join(f"{d}  {n}\n" for n, d in sorted(sums.items())))


def verify(dataset: str, path: Path, digest: str) -> None:
    """Recorded (downloaded) hash mismatch: error. Published hash mismatch: warning."""
    rec = recorded_sums(path.parent).get(path.name)
    if rec and rec != digest:
        raise DataFileError(path, f"sha256 {digest[:12]}… differs from {rec[:12]}… recorded in "
                                  f"{SUMS_FILE} at download: the file changed or is corrupt; "
                                  "delete it to download again")
    pub = PUBLISHED_SHA256.get((dataset, path.name))
    if pub and pub != digest and (path, digest) not in _warned:
        _warned.add((path, digest))
        log.warning("%s: sha256 differs from the original GroupLens release; an edited copy "
                    "(line endings, re-indexing) gives results not comparable to published ones",
                    path)


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- download ------------------------------------------------------------------------------
def fetch_url(url: str, dest: Path, progress: bool = False) -> None:
    """The one network call: stream ``url`` into ``dest``."""
    with urllib.request.urlopen(url, timeout=30) as resp, open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name)
        while chunk := resp.read(1 << 20):
            out.write(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()


def _missing_error(folder: Path, names: list[str], remote: Remote, reason: str
                   ) -> DataFileError:
    src = remote.url
    return DataFileError(folder / names[0], f"missing ({reason}); put {', '.join(names)} into "
                                            f"{folder}/ (from {src})")


def ensure_files(dataset: str, folder: Path, names: list[str], remote: Remote, *,
                 progress: bool = False) -> dict[str, Path]:
    """Paths of ``names`` in ``folder``, downloading (and verifying) the missing ones."""
    missing = [n for n in names if not (folder / n).is_file()]
    if not missing:
        return {n: folder / n for n in names}
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise _missing_error(folder, missing, remote, f"offline: {OFFLINE_ENV} is set")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmpdir = Path(tempfile.mkdtemp(dir=folder, prefix=".download-"))
    except OSError as err:
        raise _missing_error(folder, missing, remote, f"cannot write there: {err.strerror}") \
            from None
    try:
        blob = tmpdir / Path(remote.url).name
        try:
            log.info("downloading %s", remote.url)
            fetch_url(remote.url, blob, progress)
        except OSError as err:  # URLError, timeouts, refused connections are OSErrors
            raise _missing_error(folder, missing, remote,
                                 f"download failed: {getattr(err, 'reason', err)}") from None
        staged = _unpack(blob, missing, remote, tmpdir)
        digests = {name: _check_download(dataset, folder, name, path)
                   for name, path in staged.items()}
        for name, path in staged.items():
            os.replace(path, folder / name)
            if (dataset, name) not in PUBLISHED_SHA256:
                _record_sum(folder, name, digests[name])
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return {n: folder / n for n in names}


def _unpack(blob: Path, names: list[str], remote: Remote, tmpdir: Path) -> dict[str, Path]:
    if not remote.members:
        return {names[0]: blob}
    out = {}
    try:
        with zipfile.ZipFile(blob) as zf:
            for name in names:
                dest = tmpdir / name
                with zf.open(remote.members[name]) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                out[name] = dest
    except (zipfile.BadZipFile, KeyError) as err:
        raise DataFileError(remote.url, f"downloaded archive is not the expected zip ({err})") \
            from None
    return out


def _check_download(dataset: str, folder: Path, name: str, path: Path) -> str:
    digest = sha256_file(path)
    expected = PUBLISHED_SHA256.get((dataset, name)) or recorded_sums(folder).get(name)
    if expected and digest != expected:
        raise DataFileError(folder / name, f"downloaded file's sha256 {digest[:12]}… is not the "
                                           f"expected {expected[:12]}…; not installed")
    return digest
