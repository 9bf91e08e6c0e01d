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


def _run_twice(root: Path) -> tuple[dict, dict]:
    """Both processes at once (one torch thread each), so the check costs one run's time."""
    procs = []
    for name in ("a", "b"):
        env = {**os.environ, "RECSEC_CACHE_DIR": str(root / name), "PYTHONHASHSEED": "random"}
        procs.append(subprocess.Popen([sys.executable, str(HERE / "repro_job.py")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=1500)
        assert proc.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out[0], out[1]


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_every_attack_and_defense_gives_the_same_metrics_in_two_fresh_processes(tmp_path):
    first, second = _run_twice(tmp_path)
    from repro_job import CASES

    assert set(first) == set(second) == set(CASES)
    from recsec_ray.attacks import ATTACKS
    from recsec_ray.defenses import DEFENSES

    covered = {part for case in CASES for part in case.split("/")[:2]}
    assert set(ATTACKS) <= covered and set(DEFENSES) <= covered  # every one, twice
    diff = {case: {k: (v, second[case].get(k)) for k, v in m.items()
                   if not _same(v, second[case].get(k, float("inf")))}
            for case, m in first.items()}
    assert not any(diff.values()), {c: d for c, d in diff.items() if d}
    # the cases did what they name: detection scored, a backdoor measured
    assert "user_auc" in first["random/lorec"] and "item_auc" in first["badrec/pscanner"]
    assert "asr@10" in first["badrec/none"] and first["dp/none"]["n_fake_users"] == 6
    assert {"hr@1", "asr@1", "asr_base@1"} <= set(first["badrec/none/llmrec"])
