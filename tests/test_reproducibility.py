"""Same config, same metrics, across processes: every attack and defense runs twice on tiny
data, each time in a fresh Python process with its own empty caches, and every metric (wall
times and cache hit rates aside) must agree bit for bit. Within one process a stray source of
nondeterminism (hash-ordered iteration, an unseeded generator, a time-dependent step) can hide;
across processes it cannot."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(cache: Path) -> dict:
    env = {**os.environ, "RECSEC_CACHE_DIR": str(cache), "PYTHONHASHSEED": "random"}
    proc = subprocess.run([sys.executable, str(HERE / "repro_job.py")], env=env, check=False,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_every_attack_and_defense_gives_the_same_metrics_in_two_fresh_processes(tmp_path):
    first, second = _run(tmp_path / "a"), _run(tmp_path / "b")
    from repro_job import CASES

    assert set(first) == set(second) == set(CASES)
    diff = {case: {k: (v, second[case].get(k)) for k, v in m.items()
                   if not _same(v, second[case].get(k, float("inf")))}
            for case, m in first.items()}
    assert not any(diff.values()), {c: d for c, d in diff.items() if d}
    # the cases did what they name: detection scored, a backdoor measured
    assert "user_auc" in first["random/lorec"] and "item_auc" in first["badrec/pscanner"]
    assert "asr@10" in first["badrec/none"] and first["dp/none"]["n_fake_users"] == 6
