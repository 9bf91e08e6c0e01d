"""Poison-rate study (the main sweep): how clean accuracy (HR@10), attack success (T-HR@50) and
detection (F1) move as the attacker injects more fake users, per defense.

    .venv/bin/python sweeps/poison_rate.py            # ML-100K, 27 trials: 21 min on 2 CPU cores
    .venv/bin/python sweeps/poison_rate.py --full     # the papers' study (a cluster's worth)
    .venv/bin/python sweeps/poison_rate.py --ray-address auto --mlflow-uri http://mlflow:5000

Override any axis with ``--<axis> v1,v2`` (dataset, backbone, items, attack, poison-rate,
defense, seed, epochs) and any config field with ``--set key=value``; ``--resume`` continues an
interrupted run. Results: the tables printed at the end, MLflow, and ``recsec compare``.
"""

import sys

from recsec_ray.sweep import main

# Laptop default: one victim and attack, three budgets, three seeds (every cell a mean ± 95 %
# CI, every defense also a paired difference from the undefended trial of its seed), LoRec
# beside its control (the same calibrator and schedule, weights held at 1). Every arm selects
# its model from the same epoch on (LoRec's fast schedule reweights from epoch 3).
GRID = {
    "attack.poison_rate": [0.01, 0.05, 0.1],
    "defense.name": ["none", "lorec", "lorec_control"],
    "seed": [0, 1, 2],
}
FIXED = {"data.name": "ml-100k", "model.backbone": "sasrec", "attack.name": "bandwagon",
         "model.select_after": 2}

# LoRec (SIGIR'24) / LLM4Dec study: three backbones, four attacks, 1-10 % budgets, three seeds.
FULL = {
    "model.backbone": ["sasrec", "gru4rec", "bert4rec"],
    "attack.name": ["random", "bandwagon", "dp", "llm"],
    "attack.poison_rate": [0.01, 0.02, 0.05, 0.1],
    "defense.name": ["none", "llm4dec", "lorec", "lorec_control"],
    "seed": [0, 1, 2],
}
FULL_FIXED = {"data.name": "ml-100k", "model.epochs": 200, "model.patience": 10,
              "model.select_after": 2}

# Tests: two tiny trials on the synthetic generator.
SMOKE = {"attack.poison_rate": [0.05, 0.1], "defense.name": ["none"], "seed": [0]}
SMOKE_FIXED = {"data.name": "synthetic", "model.backbone": "sasrec", "attack.name": "bandwagon",
               "model.epochs": 2, "model.dim": 16, "model.heads": 1}


if __name__ == "__main__":
    sys.exit(main(__doc__, name="poison_rate", grid=GRID, fixed=FIXED, full=FULL,
                  full_fixed=FULL_FIXED, smoke=SMOKE, smoke_fixed=SMOKE_FIXED))
