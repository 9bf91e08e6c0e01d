"""The seams between victims, defenses and attacks: dependencies point one way, every
subpackage imports on its own, and a new attack or defense is one file plus one registry line."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsec_ray import job
from recsec_ray.attacks import ATTACKS
from recsec_ray.config import JobConfig
from recsec_ray.defenses import DEFENSES
from recsec_ray.errors import ConfigError
from recsec_ray.registry import Entry, lazy

PKG = Path(__file__).resolve().parent.parent / "recsec_ray"
SMALL = {"data.name": "synthetic", "data.synthetic_users": 80, "data.synthetic_items": 50,
         "model.dim": 16, "model.heads": 1, "model.epochs": 2, "seed": 3}


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = path.relative_to(PKG.parent).with_suffix("").parts[:-1]  # __init__ too
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("layer, banned", [("defenses", ("recsec_ray.attacks",)),
                                           ("models", ("recsec_ray.attacks", "recsec_ray.job"))])
def test_dependencies_point_one_way(layer, banned):
    offenders = []
    for path in sorted((PKG / layer).rglob("*.py")):
        for name in _imports(path):
            if any(name == b or name.startswith(b + ".") for b in banned):
                offenders.append(f"{path.relative_to(PKG.parent)} imports {name}")
    assert not offenders, offenders


def test_import_resolution_sees_relative_imports():
    """The check above would pass vacuously if it missed ``from ..attacks import x``."""
    names = _imports(PKG / "job.py")
    assert "recsec_ray.attacks" in names and "recsec_ray.attacks.ATTACKS" in names


@pytest.mark.parametrize("module", ["attacks", "defenses", "models", "data", "llm", "sweep",
                                    "metrics", "job", "config", "tracking", "compare"])
def test_each_subpackage_imports_alone(module):
    proc = subprocess.run([sys.executable, "-c", f"import recsec_ray.{module}"],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_job_has_no_victim_special_case():
    assert '"llmrec"' not in (PKG / "job.py").read_text()


TOY_DEFENSE = '''
"""A toy defense: drops users whose history holds item 1; scores users by repeated items."""
import numpy as np
from recsec_ray.defenses.base import Sanitation


def toy(ctx):
    san = Sanitation.keep_all(ctx.data)
    san.removed_users = np.array([1 in s[:-2] for s in ctx.data.seqs])
    san.user_scores = np.array([1 - len(set(s.tolist())) / len(s) for s in ctx.data.seqs])
    san.user_threshold = float("inf")
    return san
'''

TOY_ATTACK = '''
"""A toy attack: fake users that are the targets repeated."""
import numpy as np
from recsec_ray.attacks.base import n_fake_users, poisoned


def toy(ctx):
    fakes = [np.tile(ctx.targets, 4).astype(np.int64) for _ in range(n_fake_users(ctx))]
    return poisoned(ctx, fakes)
'''


def test_a_new_attack_and_defense_are_one_file_and_one_registry_line(tmp_path, monkeypatch):
    (tmp_path / "toy_parts.py").write_text(TOY_DEFENSE + TOY_ATTACK.replace("def toy(",
                                                                            "def toy_attack("))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = {**SMALL, "defense.name": "toy", "attack.name": "toy", "attack.poison_rate": 0.1}
    with pytest.raises(ConfigError, match="'toy' is not one of"):
        JobConfig().replace(**cfg)
    monkeypatch.setitem(DEFENSES, "toy", Entry(lazy("toy_parts", "toy")))
    monkeypatch.setitem(ATTACKS, "toy", Entry(lazy("toy_parts", "toy_attack")))
    metrics = job.run(JobConfig().replace(**cfg), progress=False)
    assert metrics["n_fake_users"] == 8 and np.isfinite(metrics["hr@10"])
    assert metrics["user_auc"] == 1.0  # fake users (repeats) are scored above real ones
    assert not job.needs_llm(JobConfig().replace(**cfg))


def test_registry_declarations_drive_config_and_llm_needs(monkeypatch):
    monkeypatch.setitem(DEFENSES, "toy", Entry(lambda ctx: None, needs_llm=True,
                                               victims="sequential"))
    assert job.needs_llm(JobConfig().replace(**{"defense.name": "toy"}))
    with pytest.raises(ConfigError, match="defense.name: toy needs a sequential backbone"):
        JobConfig().replace(**{"defense.name": "toy", "model.backbone": "pop"})


def test_llm_recommender_runs_through_the_victim_protocol():
    """The job treats the LLM recommender like any victim: train, evaluate, backdoor ASR."""
    cfg = JobConfig().replace(**{
        "data.name": "synthetic", "data.synthetic_users": 40, "data.synthetic_items": 30,
        "model.backbone": "llmrec", "model.llmrec_examples": 8, "eval.list_users": 8,
        "eval.list_candidates": 3, "model.llmrec_history": 2, "model.llmrec_lora_r": 2,
        "attack.name": "badrec", "attack.badrec_fraction": 0.05, "attack.n_targets": 3,
        "seed": 0})
    metrics = job.run(cfg, progress=False)
    for key in ("hr@1", "hr@3", "valid_ratio", "asr@1", "asr_base@1", "pop_hr@1",
                "time_train_s", "time_eval_s"):
        assert key in metrics and np.isfinite(metrics[key]), key
    assert 0 <= metrics["asr@1"] <= 1 and metrics["hr@3"] == 1.0  # 3 candidates: all in top 3
