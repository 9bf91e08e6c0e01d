"""Runs every attack and every defense once on tiny data and prints their metrics as JSON:
``test_reproducibility`` runs this twice, in two fresh processes, and compares bit for bit."""

from __future__ import annotations

import json
import sys

import torch

from recsec_ray import job
from recsec_ray.config import JobConfig

TINY = {"data.name": "synthetic", "data.synthetic_users": 60, "data.synthetic_items": 40,
        "model.dim": 16, "model.heads": 1, "model.layers": 1, "model.epochs": 3, "seed": 5,
        "attack.n_targets": 5,
        "attack.dp_batches": 2, "attack.dp_surrogate_epochs": 2,
        "defense.lorec_start_epoch": 2, "defense.max_titles": 5,
        "defense.pscanner_rounds": 1, "defense.pscanner_triggers": 6,
        "defense.pscanner_train_titles": 12}
TEXT = {"model.items": "text", "attack.name": "badrec", "attack.badrec_fraction": 0.02}
CASES = {
    **{f"{a}/none": {"attack.name": a, "attack.poison_rate": 0.1}
       for a in ("none", "random", "bandwagon", "dp", "llm")},
    "badrec/none": TEXT,
    **{f"random/{d}": {"attack.name": "random", "attack.poison_rate": 0.1, "defense.name": d}
       for d in ("llm4dec", "lorec", "lorec_control", "apr", "detector")},
    **{f"badrec/{d}": {**TEXT, "defense.name": d} for d in ("pscanner", "onion")},
    # the LLM recommender: same lists, same cached lower-layer states, same answers
    "badrec/none/llmrec": {**TEXT, "model.backbone": "llmrec", "model.llmrec_examples": 12,
                           "model.llmrec_epochs": 1, "eval.list_users": 6,
                           "eval.list_candidates": 4},
}
VOLATILE = ("time_", "llm_cache_hit_rate")  # wall clock, and what an earlier run cached


def _kept(key: str) -> bool:
    return not (key.startswith(VOLATILE) or key.endswith("_time_s"))


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    out = {}
    for name in names or list(CASES):
        metrics = job.run(JobConfig().replace(**{**TINY, **CASES[name]}), progress=False)
        out[name] = {k: v for k, v in metrics.items() if _kept(k)}
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
